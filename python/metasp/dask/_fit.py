def fit(*a, **k): raise NotImplementedError
DaskResult = None
