"""Train an MLP on the built-in digits data with the model API.

    python examples/train_digits.py [EPOCHS]
"""

import sys

import fastbp as fb

epochs = int(sys.argv[1]) if len(sys.argv) > 1 else 30

X, y = fb.load_digits(dtype="float32")
X_train, X_test, y_train, y_test = fb.train_test_split(X, y, test_size=0.2, seed=0)

model = fb.MLP([64, 128, 10], activation="relu", dtype="float32", seed=0)
history = model.fit(X_train, y_train, epochs=epochs, batch_size=32,
                    optimizer=fb.SGD(lr=0.05, momentum=0.9),
                    validation_data=(X_test, y_test))
print(f"final training loss {history['loss'][-1]:.4f}, "
      f"validation accuracy {history['val_accuracy'][-1]:.4f}")
print("test scores:", model.evaluate(X_test, y_test))

model.save("digits_model.npz")
again = fb.MLP.load("digits_model.npz")
assert (again.predict(X_test) == model.predict(X_test)).all()
print("saved and reloaded digits_model.npz")
