"""The two teachers: a linguistic one over transcripts and a prosodic one over eGeMAPS LLDs."""

from training.models.teachers.linguistic import LinguisticTeacher
from training.models.teachers.prosodic import ProsodicTeacher

__all__ = ["LinguisticTeacher", "ProsodicTeacher"]
