"""The file the Functions Python worker indexes (app setting ``PYTHON_SCRIPT_FILE_NAME=main.py``).

The worker imports this module by its file name and looks for exactly one FunctionApp among its
top-level names, so only ``app`` is imported here.
"""

from function_app import app

__all__ = ["app"]
