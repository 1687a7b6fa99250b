"""`mlops serve`: the HTTP API (app.py) and the model it serves, hot-reloaded (model_holder.py)."""
