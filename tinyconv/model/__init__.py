"""The model: configs and presets, the builder, the architecture's layers, and the speed kernels behind them.

config     ModelConfig, PRESETS, get_config, stage_plan (no Keras: the CLI's --help reads it)
build      build_model, model_info, format_info
layers     the architecture, each layer citing its source
kernels    fast paths behind the layers (same weights and configs)
pallas_depthwise  the depthwise conv's Pallas kernels (JAX only: imported where the "pallas" form is used)
fast_path  which form each layer computes on this device and backend: every such decision, in one place
"""
