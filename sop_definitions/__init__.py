"""Data only: the SOP library (*.sop.yaml), its JSON Schema and the service directory."""
