"""Build a model from its config, and count what it holds.

    model = build_model("seed", kernel_sizes=7)      # [B, 64, 64, 3] normalized -> [B, classes] logits
    print(format_info(model_info("seed")))           # params, MACs, receptive field per stage

`build_model` walks `tinyconv.model.config.stage_plan` entry by entry, so the plan that the notebooks draw and
that `model_info` counts is the model that is built. Imports Keras (and with it the backend): the config
module beside it does not, for `tinyconv --help`.
"""

from __future__ import annotations

import keras
import numpy as np

from tinyconv.model import layers as tl
from tinyconv.model.config import get_config, stage_plan
from tinyconv.model.kernels import FusedBatchNormalization, gelu_exact, gelu_tanh


def build_model(name_or_config="seed", **overrides):
    """The Keras functional model of a preset or config, built entry by entry from `stage_plan`.

    Input: [B, image_size, image_size, 3] float32, already normalized. Output: logits [B, num_classes],
    float32 also under a mixed-precision policy.
    """
    config = get_config(name_or_config, **overrides)
    activation = gelu_tanh if config.gelu_approximate else gelu_exact
    bn = lambda name: FusedBatchNormalization(  # noqa: E731
        momentum=config.bn_momentum, epsilon=config.bn_epsilon, name=name
    )

    def conv_norm_act(x, name):
        """After a stem or down conv: GELU then BN (the reference's order), or BN then ReLU (ResNet's)."""
        if config.block == "basic":
            return keras.layers.Activation("relu", name=f"{name}_relu")(bn(f"{name}_bn")(x))
        return bn(f"{name}_bn")(keras.layers.Activation(activation, name=f"{name}_gelu")(x))

    rearrange_layers = {
        "space_to_depth": lambda entry, name: tl.SpaceToDepth(entry["stride"], name=name),
        "unfold": lambda entry, name: tl.SpaceToDepth(entry["stride"], name=name),
        "shuffle": lambda entry, name: tl.SpatialShuffle(name=name),
        "haar": lambda entry, name: tl.HaarDWT(name=name),
        "maxpool": lambda entry, name: keras.layers.MaxPooling2D(2, 2, padding="same", name=name),
    }
    inputs = keras.Input((config.image_size, config.image_size, 3), name="image")
    x = inputs
    for entry in stage_plan(config):
        name = entry["name"]
        if entry["kind"] in ("stem", "down") and entry["rearrange"]:
            # the parameter-free part: [B, H, W, C] -> [B, H/2, W/2, 4C] (haar, space_to_depth), [B, H/2, W/2, C]
            # (maxpool), [B, H/p, W/p, p*p*3] (unfold) or [B, H, W, 6] (shuffle)
            x = rearrange_layers[entry["rearrange"]](entry, f"{name}_{entry['rearrange']}")(x)
        if entry["kind"] == "stem":
            x = keras.layers.Conv2D(
                entry["width"], entry["kernel"], strides=entry["conv_stride"], padding="same", use_bias=False,
                name="stem_conv",
            )(x)  # [B, 32, 32, C1]
            x = conv_norm_act(x, "stem")
        elif entry["kind"] == "down":
            if entry["down"] == "grouped_conv":
                init = (tl.GroupedGlorotUniform(entry["groups"]) if config.down_init == "per_group"
                        else "glorot_uniform")
                x = tl.GroupedConv2D(
                    entry["width"], entry["kernel"], strides=2, groups=entry["groups"], use_bias=False,
                    implementation=config.grouped_conv, kernel_initializer=init, name=f"{name}_conv",
                )(x)  # [B, H/2, W/2, C_{s+1}]
            else:
                x = keras.layers.Conv2D(entry["width"], 1, use_bias=False, name=f"{name}_conv")(x)
            x = conv_norm_act(x, name)
        elif entry["kind"] == "stage":
            for b, rate in enumerate(entry["drop_path"]):
                if config.block == "basic":
                    x = tl.ResidualBlock(
                        kernel_size=entry["kernel_size"],
                        drop_path=rate,
                        bn_momentum=config.bn_momentum,
                        bn_epsilon=config.bn_epsilon,
                        name=f"{name}_block{b + 1}",
                    )(x)
                    continue
                x = tl.ConvMixerBlock(
                    mode=entry["mode"],
                    kernel_size=entry["kernel_size"],
                    axial_kernel_size=entry["axial_kernel_size"],
                    se_reduction=entry["se_reduction"] or None,
                    drop_path=rate,
                    layer_scale_init=config.layer_scale_init,
                    gelu_approximate=config.gelu_approximate,
                    bn_momentum=config.bn_momentum,
                    bn_epsilon=config.bn_epsilon,
                    name=f"{name}_block{b + 1}",
                )(x)
        else:  # head
            x = keras.layers.GlobalAveragePooling2D(name="head_pool")(x)  # [B, C_last]
            # float32 head: stable logits and softmax under mixed precision
            x = keras.layers.Dense(entry["width"], dtype="float32", name="head")(x)
    return keras.Model(inputs, x, name=f"tinyconv_{config.name}")


def model_info(name_or_config="seed", **overrides) -> dict:
    """Parameters (from the built model), multiply-accumulates per image and receptive field per stage.

    Returns {name, params_total, params_trainable, params_non_trainable, macs_per_image, input_shape,
    receptive_field, stages: [{name, params, macs, output_shape, receptive_field}], config}. MACs count
    convolutions and dense layers (not BN, activations or the SE scaling); the receptive field is the
    theoretical one in input pixels.
    """
    config = get_config(name_or_config, **overrides)
    model = build_model(config)
    count = lambda weights: int(sum(np.prod(w.shape) for w in weights))  # noqa: E731
    stages = []
    for entry in stage_plan(config):
        layers = [layer for layer in model.layers if layer.name.startswith(entry["prefixes"])]
        stages.append(
            dict(
                name=entry["name"],
                params=count(w for layer in layers for w in layer.weights),
                macs=int(entry["macs"]),
                output_shape=entry["output_shape"],
                receptive_field=entry["receptive_field"],
            )
        )
    trainable = count(model.trainable_weights)
    total = count(model.weights)
    assert sum(stage["params"] for stage in stages) == total, "a layer is outside every stage prefix"
    return dict(
        name=config.name,
        params_total=total,
        params_trainable=trainable,
        params_non_trainable=total - trainable,
        macs_per_image=int(sum(stage["macs"] for stage in stages)),
        input_shape=[config.image_size, config.image_size, 3],
        receptive_field=stages[-1]["receptive_field"],
        stages=stages,
        config=config.to_dict(),
    )


def format_info(info: dict) -> str:
    """A readable table of `model_info`'s result."""
    lines = [
        f"model {info['name']}: input {tuple(info['input_shape'])}",
        f"{'stage':<10}{'output':>16}{'params':>14}{'MMACs':>12}{'receptive field':>18}",
    ]
    for stage in info["stages"]:
        shape = "x".join(str(n) for n in stage["output_shape"])
        lines.append(
            f"{stage['name']:<10}{shape:>16}{stage['params']:>14,}{stage['macs'] / 1e6:>12.1f}"
            f"{stage['receptive_field']:>18}"
        )
    lines.append(
        f"{'total':<10}{'':>16}{info['params_total']:>14,}{info['macs_per_image'] / 1e6:>12.1f}"
        f"{info['receptive_field']:>18}"
    )
    lines.append(
        f"trainable {info['params_trainable']:,}, non-trainable {info['params_non_trainable']:,} (BN statistics); "
        f"{info['macs_per_image'] / 1e9:.3f} GMAC per image"
    )
    return "\n".join(lines)
