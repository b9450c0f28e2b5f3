"""Using a trained model: load it, evaluate and predict (any backend), and export it for deployment.

inference  load a model and its classes, logits, evaluate, predict, read exported files back
export     SavedModel, TFLite and ONNX, each checked on the spot against the Keras model
"""
