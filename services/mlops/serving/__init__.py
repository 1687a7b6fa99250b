"""`mlops serve`: the HTTP API (app.py, routes.py) on the champion model, hot-reloaded
(model_holder.py); what a request must hold is generated from the loaded model
(request_models.py)."""
