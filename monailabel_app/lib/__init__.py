"""Tasks of the label-efficient MONAI Label app (``monailabel_app/main.py``)."""
