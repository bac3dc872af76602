"""The report's parts: its typed model, the gate, the views, the plots, safe text, the comparison
of two reports and the templates. Imports on the device's Python 3.8 without torch or onnx.
"""

from pathlib import Path

# The Jinja templates of the report's renderings and of a comparison of two reports.
TEMPLATES = Path(__file__).resolve().parent / "templates"
