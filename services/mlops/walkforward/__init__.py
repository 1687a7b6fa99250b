"""The walk-forward (``mlops walk-forward``): the live system replayed over history.

At every retrain point the catalog's models are trained as ``mlops train`` trains them,
on what was known then; the promotion gate picks each period's champion; the champions'
predictions are traded with the live strategy and risk code. A runner above the stages:
it composes training and trading, which never import each other.
"""
