"""Response bodies of the HTTP API (they also document it in the OpenAPI schema)."""

from __future__ import annotations

from pydantic import BaseModel, Field, SerializerFunctionWrapHandler, model_serializer


class LabelScore(BaseModel):
    label: str
    probability: float


class Timings(BaseModel):
    decode_ms: float | None = Field(None, description="decode + downmix + resample")
    vad_ms: float | None = Field(None, description="voice activity detection (segment=true)")
    queue_wait_ms: float = Field(description="waiting for a batch (summed over segments)")
    inference_ms: float = Field(description="ONNX Runtime time of the batch (summed over segments)")
    total_ms: float | None = Field(None, description="from decoded body to answer")


class Scores(BaseModel):
    label: str | None = Field(description="most probable label (null: no speech found)")
    confidence: float | None = Field(description="its probability")
    uncertain: bool | None = Field(
        None,
        description="confidence below min_confidence: the label is a guess (label and "
        "probabilities are kept); null when no speech was found",
    )
    probabilities: dict[str, float] | None = Field(description="every label, in model order")
    top_k: list[LabelScore] | None = Field(None, description="the k best labels (top_k=k)")
    embedding: list[float] | None = Field(
        None, description="utterance embedding (return_embedding)"
    )
    dimensions: dict[str, float] | None = Field(
        None,
        description="only from a model with dimensions (model.json `dimensions`; /v1/model "
        "lists them): each dimension's value on the model's scale, in its order, e.g. arousal, "
        "valence, dominance on 1-5 (1 low, 5 high, not clipped); null when no speech was "
        "found; absent for a model without dimensions",
        examples=[{"arousal": 3.41, "valence": 2.87, "dominance": 3.1}],
    )

    @model_serializer(mode="wrap")
    def _omit_absent_dimensions(self, handler: SerializerFunctionWrapHandler):
        """A model without dimensions answers without the key (answers unchanged)."""
        data = handler(self)
        if "dimensions" not in self.model_fields_set:
            data.pop("dimensions", None)
        return data


class Segment(Scores):
    start_s: float
    end_s: float
    batch_size: int
    timings: Timings


class Prediction(Scores):
    filename: str | None = Field(None, description="the multipart file name, if any")
    duration_s: float
    batch_size: int | None = Field(None, description="utterances in the ONNX Runtime call")
    timings: Timings
    segments: list[Segment] | None = Field(
        None, description="segment=true: one entry per utterance; the top level is the summary"
    )


class PredictResponse(BaseModel):
    results: list[Prediction] = Field(description="one per input file, in request order")


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorResponse(BaseModel):
    error: ErrorDetail
