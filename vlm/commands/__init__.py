"""The psgvlm commands that use a trained model; each is a thin client of vlm.runtime."""
