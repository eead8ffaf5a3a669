"""The network of Qiu et al.: model.build_networks (every variant, training and inference networks sharing their
weights) and model.ModelConfig; saving.save_model, saving.load_model and saving.resolve_model_path (a model file and
its card together); inference.NetworkRunner (the traced call on batches) and inference.select_device. model and
saving load Keras when imported, so this package imports none of them itself."""
