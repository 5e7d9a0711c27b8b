"""The two teachers: a linguistic one over transcripts and a prosodic one over eGeMAPS LLDs."""

from training.teachers.linguistic import LinguisticTeacher, train_linguistic
from training.teachers.prosodic import ProsodicTeacher, train_prosodic

__all__ = ["LinguisticTeacher", "ProsodicTeacher", "train_linguistic", "train_prosodic"]
