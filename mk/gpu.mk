# GPU: `make gpu` replaces the venv's tensorflow-cpu with the CUDA build of the same TensorFlow (pip's
# tensorflow[and-cuda] brings CUDA and cuDNN as wheels; only the NVIDIA driver must be on the machine), then
# says which GPUs TensorFlow sees. `make test` and `make demo` afterwards keep it (requirements.txt is only
# reinstalled when it changes; after a change run `make cpu gpu`). `make cpu` goes back. Included from the top
# Makefile. The GPU is used wherever the engine's device is auto or gpu; the QGIS log names the device.

TF_VERSION := $(shell sed -n 's/^tensorflow-cpu==//p' requirements.txt)

.PHONY: gpu cpu

gpu: venv
	$(PY) -m pip uninstall -q -y tensorflow-cpu
	$(PY) -m pip install -q --disable-pip-version-check "tensorflow[and-cuda]==$(TF_VERSION)" \
		$$(grep -E '^(numpy|keras|protobuf)' requirements.txt)
	# As in `make venv`: Debian's python3-h5py, not pip's (it crashes inside QGIS).
	$(PY) -m pip uninstall -q -y h5py || true
	$(PY) -c "import tensorflow as tf; g = tf.config.list_physical_devices('GPU'); \
		print('TensorFlow', tf.__version__, 'sees', len(g), 'GPU(s):', [d.name for d in g] or \
		'none (is the NVIDIA driver installed? nvidia-smi should list the card)')"

cpu: venv
	$(PY) -m pip uninstall -q -y tensorflow
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt
	$(PY) -m pip uninstall -q -y h5py || true
