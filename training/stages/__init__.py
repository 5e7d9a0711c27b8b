"""The stages of the EmoDistill recipe, one module each, in the order ``training.recipe`` runs
them: data, transcribe, prosody, teachers, targets, students, refit, report, export."""
