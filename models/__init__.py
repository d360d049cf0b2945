"""Models bundled with raqcodec (installed as ``raqcodec.bundled``); see the model cards (*.json, *.md)."""
