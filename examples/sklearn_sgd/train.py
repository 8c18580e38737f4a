"""A linear classifier trained with scikit-learn's SGDClassifier.partial_fit on the
digits data, recorded with flordb: no torch anywhere.

    python train.py --kwargs eta0=0.01 epochs=8

The model's whole state is two numpy arrays, ``coef_`` and ``intercept_``, which
``partial_fit`` updates in place; flor.checkpointing takes numpy arrays as they are.
"""
import numpy as np
from sklearn.datasets import load_digits
from sklearn.linear_model import SGDClassifier
from sklearn.metrics import log_loss  # noqa: F401  (for metrics added in hindsight)

import flordb as flor

digits = load_digits()
X, y = digits.data / 16.0, digits.target
train_X, val_X = X[:1400], X[1400:]
train_y, val_y = y[:1400], y[1400:]
classes = np.arange(10)

eta0 = flor.arg("eta0", 0.01)
alpha = flor.arg("alpha", 1e-4)
epochs = flor.arg("epochs", 8)
batch = flor.arg("batch", 50)

clf = SGDClassifier(loss="log_loss", learning_rate="constant", eta0=eta0, alpha=alpha,
                    random_state=0)
# Allocate the parameters up front (what the first partial_fit would do), so the
# arrays flor.checkpointing holds are the ones partial_fit keeps updating. With a
# constant learning rate they are the model's whole state.
clf.coef_ = np.zeros((len(classes), X.shape[1]))
clf.intercept_ = np.zeros(len(classes))

rng = np.random.default_rng(0)
with flor.checkpointing(coef=clf.coef_, intercept=clf.intercept_, rng=rng):
    for epoch in flor.loop("epoch", range(epochs)):
        order = rng.permutation(len(train_X))
        for start in flor.loop("step", range(0, len(order), batch)):
            idx = order[start:start + batch]
            clf.partial_fit(train_X[idx], train_y[idx], classes=classes)
            flor.log("train_acc", clf.score(train_X[idx], train_y[idx]))
        flor.log("val_acc", clf.score(val_X, val_y))
