"""fastbp's scikit-learn estimator in a Pipeline with a grid search.

    python examples/sklearn_pipeline.py
"""

import warnings

from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from fastbp.sklearn import MLPClassifier

X, y = load_digits(return_X_y=True)
X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, random_state=0)

pipe = make_pipeline(StandardScaler(), MLPClassifier(solver="sgd", learning_rate_init=0.05,
                                                     batch_size=32, max_iter=30, random_state=0))
grid = GridSearchCV(pipe, {"mlpclassifier__hidden_layer_sizes": [(32,), (128,)],
                           "mlpclassifier__alpha": [1e-4, 1e-2]}, cv=3)
with warnings.catch_warnings():
    warnings.simplefilter("ignore", ConvergenceWarning)
    grid.fit(X_train, y_train)
print("best parameters:", grid.best_params_)
print(f"cross-validated accuracy {grid.best_score_:.4f}, test accuracy "
      f"{grid.score(X_test, y_test):.4f}")
