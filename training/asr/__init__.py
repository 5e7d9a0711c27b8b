"""Speech recognition for training: Whisper transcribes the utterances a dataset gives without
text, so that the linguistic teacher can read them. Used by the transcribe stage only; the
student and the server never transcribe (docs/training.md, "Your own data")."""

ENGINES = ("auto", "ctranslate2", "transformers")
COMPUTE_TYPES = ("auto", "float32", "int8", "float16", "int8_float32")
