"""The AI model catalogue: which STT, LLM and TTS weights each profile runs, and their checks."""

from models.catalog import ModelFile, ModelSpec, Role, load_catalog, profile_models, profile_voices
from models.errors import ModelCorrupt, ModelError, ModelMissing, ModelNotPinned
from models.verify import VerifiedModel, verify_model, verify_profile, verify_voices

__all__ = [
    "ModelCorrupt",
    "ModelError",
    "ModelFile",
    "ModelMissing",
    "ModelNotPinned",
    "ModelSpec",
    "Role",
    "VerifiedModel",
    "load_catalog",
    "profile_models",
    "profile_voices",
    "verify_model",
    "verify_profile",
    "verify_voices",
]
