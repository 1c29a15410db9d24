"""Forward-pass parity and parameter counts against LibMTL 1.1.5's torch architectures (same
weights copied in), and hand cases of the papers' equations where LibMTL has no module.

LibMTL's package ``__init__`` imports torchvision (for its pretrained ResNets); the architecture
modules do not need it, so they are loaded from the installed package without running that
``__init__``; ``torchvision.models.utils`` is stubbed for ``LibMTL.model.resnet``, whose only use
of it is downloading pretrained weights.
"""

import importlib
import importlib.util
import pathlib
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

nnx = pytest.importorskip("flax.nnx")
torch = pytest.importorskip("torch")

from mtlx import models  # noqa: E402
from mtlx.models._ltb import gumbel_softmax  # noqa: E402
from mtlx.models._moe import smooth_step  # noqa: E402

IN = 12
TASKS = ["a", "b", "c"]
T = len(TASKS)
OUT = 4
_STUBS = ("LibMTL", "LibMTL.model", "torchvision", "torchvision.models", "torchvision.models.utils")


@pytest.fixture(scope="module")
def lib():
    """``LibMTL.architecture`` and ``LibMTL.model.resnet``, imported without LibMTL's
    ``__init__`` (which needs torchvision); sys.modules is restored afterwards."""
    spec = importlib.util.find_spec("LibMTL")
    if spec is None or spec.origin is None:
        pytest.skip("LibMTL is not installed")
    root = pathlib.Path(spec.origin).parent
    saved = {k: sys.modules[k] for k in list(sys.modules) if k.split(".")[0] in ("LibMTL",)}
    saved.update({k: sys.modules[k] for k in _STUBS if k in sys.modules})
    for k in [k for k in sys.modules if k.split(".")[0] == "LibMTL"]:
        del sys.modules[k]
    package = types.ModuleType("LibMTL")
    package.__path__ = [str(root)]
    model_pkg = types.ModuleType("LibMTL.model")
    model_pkg.__path__ = [str(root / "model")]
    sys.modules["LibMTL"], sys.modules["LibMTL.model"] = package, model_pkg
    if importlib.util.find_spec("torchvision") is None:
        utils = types.ModuleType("torchvision.models.utils")

        def load_state_dict_from_url(*args, **kwargs):
            raise RuntimeError("no pretrained weights in these tests")

        utils.load_state_dict_from_url = load_state_dict_from_url
        sys.modules["torchvision"] = types.ModuleType("torchvision")
        sys.modules["torchvision.models"] = types.ModuleType("torchvision.models")
        sys.modules["torchvision.models.utils"] = utils
    try:
        arch = importlib.import_module("LibMTL.architecture")
        resnet = importlib.import_module("LibMTL.model.resnet")
        yield types.SimpleNamespace(arch=arch, resnet=resnet)
    finally:
        for k in [k for k in sys.modules if k.split(".")[0] in ("LibMTL", "torchvision")]:
            del sys.modules[k]
        sys.modules.update(saved)


# ---------------------------------------------------------------------------------------------
# torch modules and weight copying


def _mlp(widths):
    layers = []
    for a, b in zip(widths[:-1], widths[1:]):
        layers += [torch.nn.Linear(a, b), torch.nn.ReLU()]
    return torch.nn.Sequential(*layers)


class _DenseResNet(torch.nn.Module):
    """The attributes LibMTL's ResNet-only architectures read (conv1, bn1, relu, maxpool,
    layer1..4), made of Linear + ReLU layers: an MLP that LibMTL's PLE and Cross-stitch accept."""

    def __init__(self, widths, layer1=True):
        super().__init__()
        self.conv1 = torch.nn.Linear(widths[0], widths[1])
        self.bn1, self.relu, self.maxpool = (
            torch.nn.Identity(),
            torch.nn.ReLU(),
            torch.nn.Identity(),
        )
        rest = widths[1:] if layer1 else (widths[1], *widths[1:])
        for i in range(4):
            if i == 0 and not layer1:
                self.layer1 = torch.nn.Identity()
                continue
            setattr(self, f"layer{i + 1}", _mlp(rest[i : i + 2]))


def _decoders(width):
    return torch.nn.ModuleDict({t: torch.nn.Linear(width, OUT) for t in TASKS})


def _a(x):
    return np.asarray(x.detach().numpy(), np.float32)


def _stack(arrays):
    return jnp.asarray(np.stack(arrays))


def _set(var, value):
    assert var[...].shape == value.shape, (var[...].shape, value.shape)
    var[...] = jnp.asarray(value, jnp.float32)


def _set_linear(linear, torch_linears):
    """A stacked ``nnx.Linear`` (leading axes = the nesting of ``torch_linears``) from torch's."""

    def weights(x, attr):
        if isinstance(x, (list, tuple)):
            return np.stack([weights(y, attr) for y in x])
        w = _a(getattr(x, attr))
        return w.T if attr == "weight" else w

    _set(linear.kernel, weights(torch_linears, "weight"))
    _set(linear.bias, weights(torch_linears, "bias"))


def _set_heads(heads, decoders):
    _set_linear(heads.head, [decoders[t] for t in TASKS])


def _count_torch(module):
    return sum(p.numel() for p in module.parameters())


def _count(model):
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


def _inputs(n=6, seed=0):
    x = np.random.default_rng(seed).standard_normal((n, IN)).astype(np.float32)
    return x, torch.from_numpy(x)


def _compare(model, torch_out, x):
    got = model(jnp.asarray(x))
    diffs = []
    for t, task in enumerate(TASKS):
        want = _a(torch_out[task])
        np.testing.assert_allclose(got[t], want, rtol=1e-5, atol=1e-5)
        diffs.append(float(np.max(np.abs(np.asarray(got[t]) - want))))
    print(f"{type(model).__name__}: max |mtlx - LibMTL| = {max(diffs):.2e}")  # shown with -s
    return max(diffs)


# ---------------------------------------------------------------------------------------------
# mixtures of experts

HIDDEN = (8, 6)


def _libmtl(cls, encoder_class, width, **kwargs):
    arch = cls(TASKS, encoder_class, _decoders(width), False, False, "cpu", **kwargs)
    arch.eval()
    return arch


def test_mmoe_matches_libmtl(lib):
    torch.manual_seed(0)
    ref = _libmtl(lib.arch.MMoE, lambda: _mlp((IN, *HIDDEN)), HIDDEN[-1], img_size=[IN],
                  num_experts=[3])  # fmt: skip
    model = models.mmoe(T, OUT, in_features=IN, hidden=HIDDEN, num_experts=3, rngs=nnx.Rngs(0))
    for k in range(len(HIDDEN)):
        _set_linear(model.experts.stages[k].linear, [e[2 * k] for e in ref.experts_shared])
    _set_linear(model.task_specific["gates"], [ref.gate_specific[t][0] for t in TASKS])
    _set_heads(model.heads, ref.decoders)
    x, xt = _inputs()
    with torch.no_grad():
        diff = _compare(model, ref(xt), x)
    assert diff < 1e-5
    print(f"{type(model).__name__}: {_count(model)} parameters, LibMTL {_count_torch(ref)}")
    assert _count(model) == _count_torch(ref)


def test_cgc_matches_libmtl(lib):
    torch.manual_seed(1)
    ref = _libmtl(lib.arch.CGC, lambda: _mlp((IN, *HIDDEN)), HIDDEN[-1], img_size=[IN],
                  num_experts=[2, 2, 2, 2])  # fmt: skip
    model = models.cgc(T, OUT, in_features=IN, hidden=HIDDEN, num_experts=[2, 2, 2, 2],
                       rngs=nnx.Rngs(0))  # fmt: skip
    for k in range(len(HIDDEN)):
        _set_linear(model.experts.stages[k].linear, [e[2 * k] for e in ref.experts_shared])
        _set_linear(
            model.task_specific["experts"].stages[k].linear,
            [[e[2 * k] for e in ref.experts_specific[t]] for t in TASKS],
        )
    _set_linear(model.task_specific["gates"], [ref.gate_specific[t][0] for t in TASKS])
    _set_heads(model.heads, ref.decoders)
    x, xt = _inputs()
    with torch.no_grad():
        assert _compare(model, ref(xt), x) < 1e-5
    print(f"{type(model).__name__}: {_count(model)} parameters, LibMTL {_count_torch(ref)}")
    assert _count(model) == _count_torch(ref)


@pytest.mark.parametrize("num_experts", [4, 3])  # a power of 2 and not
def test_dselect_k_matches_libmtl(lib, num_experts):
    torch.manual_seed(2)
    ref = _libmtl(lib.arch.DSelect_k, lambda: _mlp((IN, *HIDDEN)), HIDDEN[-1], img_size=[IN],
                  num_experts=[num_experts], num_nonzeros=2, kgamma=1.0)  # fmt: skip
    model = models.dselect_k(T, OUT, in_features=IN, hidden=HIDDEN, num_experts=num_experts,
                             num_nonzeros=2, rngs=nnx.Rngs(0))  # fmt: skip
    for k in range(len(HIDDEN)):
        _set_linear(model.experts.stages[k].linear, [e[2 * k] for e in ref.experts_shared])
    # LibMTL's init (uniform in +-gamma/100) makes every logit nearly 0: scale up so that the
    # smooth step's three pieces are all exercised.
    with torch.no_grad():
        for t in TASKS:
            ref._z_logits[t].weight.mul_(100.0)
            ref._z_logits[t].bias.mul_(100.0)
    # LibMTL 1.1.5 builds its code table with np.array(list("01")).astype(bool), which is True for
    # both characters: every expert gets the all-ones code. Compared with the intended table
    # (expert e's binary code), which mtlx uses.
    assert bool(ref._binary_codes.all())
    codes = [
        [c == "1" for c in np.binary_repr(e, width=ref._num_binary)] for e in range(num_experts)
    ]
    ref._binary_codes = torch.tensor(codes).unsqueeze(0)
    _set_linear(model.task_specific["z_logits"], [ref._z_logits[t] for t in TASKS])
    _set_linear(model.task_specific["w_logits"], [ref._w_logits[t] for t in TASKS])
    _set_heads(model.heads, ref.decoders)
    x, xt = _inputs()
    with torch.no_grad():
        assert _compare(model, ref(xt), x) < 1e-5
    print(f"{type(model).__name__}: {_count(model)} parameters, LibMTL {_count_torch(ref)}")
    assert _count(model) == _count_torch(ref)
    z = jnp.linspace(-1.0, 1.0, 41)
    np.testing.assert_allclose(smooth_step(z), _a(ref._smooth_step_fun(torch.from_numpy(np.asarray(z)))),
                               atol=1e-6)  # fmt: skip


def test_ple_matches_libmtl(lib):
    torch.manual_seed(3)
    widths = (IN, 8, 7, 6, 6, 5)
    ref = _libmtl(lib.arch.PLE, lambda: _DenseResNet(widths), 5, img_size=[IN],
                  num_experts=[2, 1, 1, 1])  # fmt: skip
    model = models.ple(T, OUT, in_features=IN, hidden=widths[1:], num_experts=[2, 1, 1, 1],
                       rngs=nnx.Rngs(0))  # fmt: skip
    enc = ref.encoder
    for i in range(5):
        _set_linear(model.experts[i].linear, [e[0] for e in enc.shared_layer[str(i)]])
        _set_linear(
            model.task_specific["experts"][i].linear,
            [[e[0] for e in enc.specific_layer[str(i)][t]] for t in TASKS],
        )
        _set_linear(model.task_specific["gates"][i], [enc.gate_specific[t][i][0] for t in TASKS])
    _set_heads(model.heads, ref.decoders)
    x, xt = _inputs()
    with torch.no_grad():
        assert _compare(model, ref(xt), x) < 1e-5
    print(f"{type(model).__name__}: {_count(model)} parameters, LibMTL {_count_torch(ref)}")
    assert _count(model) == _count_torch(ref)


# ---------------------------------------------------------------------------------------------
# task columns


@pytest.mark.parametrize("units", ["libmtl", "matrix"])
def test_cross_stitch_matches_libmtl(lib, units):
    torch.manual_seed(4)
    widths = (IN, 8, 7, 6, 5)
    ref = _libmtl(lib.arch.Cross_stitch, lambda: _DenseResNet(widths, layer1=False), 5)
    with torch.no_grad():
        ref.encoder.cross_unit.copy_(torch.rand(4, T) + 0.2)
    model = models.cross_stitch(T, OUT, in_features=IN, hidden=widths[1:], units=units,
                                rngs=nnx.Rngs(0))  # fmt: skip
    enc = ref.encoder
    _set_linear(model.columns.stages[0].linear, [enc.resnet_conv[t][0] for t in TASKS])
    for k in range(1, 4):
        _set_linear(
            model.columns.stages[k].linear, [enc.resnet_layer[str(k)][t][0] for t in range(T)]
        )
    unit = _a(enc.cross_unit)[:3]  # LibMTL uses 3 of its 4 rows
    _set(model.stitch, unit if units == "libmtl" else np.repeat(unit[:, None], T, axis=1))
    _set_heads(model.heads, ref.decoders)
    x, xt = _inputs()
    with torch.no_grad():
        assert _compare(model, ref(xt), x) < 1e-5
    print(f"CrossStitch ({units}): {_count(model)} parameters, LibMTL {_count_torch(ref)}")
    if units == "libmtl":  # LibMTL's cross_unit has one unused row of T weights
        assert _count(model) == _count_torch(ref) - T
    else:
        assert _count(model) == _count_torch(ref) - 4 * T + 3 * T * T


def test_cross_stitch_matrix_units_mix_per_task():
    """The paper's unit on a hand case: two columns' outputs mixed by [[a, b], [c, d]]."""
    model = models.cross_stitch(2, 1, in_features=2, hidden=(2, 2), rngs=nnx.Rngs(0))
    np.testing.assert_allclose(model.stitch[0], [[0.9, 0.1], [0.1, 0.9]], rtol=1e-6)
    h = jnp.array([[[1.0, 2.0]], [[10.0, 20.0]]])  # (T=2, N=1, C=2)
    model.stitch[...] = jnp.array([[[0.5, 2.0], [-1.0, 3.0]]])
    np.testing.assert_allclose(model.mix(0, h), [[[20.5, 41.0]], [[29.0, 58.0]]])


def test_nddr_layer_is_the_papers_equation():
    """NDDR (Gao et al. 2019): task t's features are ReLU(BN(W_t [h_1; h_2])), W_t a 1 x 1
    convolution without bias initialised alpha * I on its own channels, beta * I on others'."""
    model = models.nddr_cnn(2, 1, in_features=3, hidden=(4, 4), alpha=0.7, beta=0.2,
                            rngs=nnx.Rngs(0))  # fmt: skip
    kernel = np.asarray(model.nddr[0].linear.kernel[...])
    np.testing.assert_allclose(kernel[0], np.vstack([0.7 * np.eye(4), 0.2 * np.eye(4)]))
    np.testing.assert_allclose(kernel[1], np.vstack([0.2 * np.eye(4), 0.7 * np.eye(4)]))
    h = jax.random.normal(jax.random.key(0), (2, 16, 4))  # (T, N, C)
    model.eval()  # BN with running statistics (mean 0, variance 1): y = x / sqrt(1 + eps)
    fused = model.fuse(0, h)
    concat = np.concatenate([h[0], h[1]], -1)
    for t in range(2):
        want = np.maximum(concat @ kernel[t] / np.sqrt(1 + 1e-5), 0)
        np.testing.assert_allclose(fused[t], want, rtol=1e-5, atol=1e-6)
    model.train()  # batch statistics: every output channel normalised over the batch
    fused = np.asarray(model.fuse(0, h))
    pre = np.stack([concat @ kernel[t] for t in range(2)])
    normed = (pre - pre.mean(1, keepdims=True)) / np.sqrt(pre.var(1, keepdims=True) + 1e-5)
    np.testing.assert_allclose(fused, np.maximum(normed, 0), rtol=1e-4, atol=1e-5)
    # Parameters: per fusion and task, a (T*C, C) kernel and BN's scale and bias.
    assert models.nddr_cnn(2, 1, in_features=3, hidden=(4, 4), rngs=nnx.Rngs(0)).nddr[
        0
    ].linear.kernel.shape == (2, 8, 4)


def test_ltb_mixes_parents_by_gumbel_softmax():
    """LTB (Guo et al. 2020): node i of stage k reads sum_j z_ij h_j, z a Gumbel-softmax sample
    of its parent logits; one-hot parents in eval mode make each node its parent's child."""
    model = models.ltb(2, 1, in_features=3, hidden=(4, 4), temperature=0.5, rngs=nnx.Rngs(0))
    logits = jnp.array([[1.0, -1.0], [0.0, 2.0]])
    model.branch_logits[0][...] = logits
    z = model.branch_weights(0)
    np.testing.assert_allclose(z.sum(-1), 1.0, rtol=1e-6)
    g = jax.random.gumbel(jax.random.key(1), (2, 2))
    soft = gumbel_softmax(jax.random.key(1), logits, 0.5)
    np.testing.assert_allclose(soft, jax.nn.softmax((logits + g) / 0.5, axis=-1), rtol=1e-6)
    hard = gumbel_softmax(jax.random.key(1), logits, 0.5, hard=True)
    np.testing.assert_array_equal(hard, jax.nn.one_hot(jnp.argmax(soft, -1), 2))
    model.eval()
    x = jax.random.normal(jax.random.key(2), (5, 3))
    out = model(x)
    # By hand: parents (0, 1) -> node i of stage 1 reads stage-0 node argmax(logits[i]).
    h0 = [model.nodes[0].linear.kernel[j] for j in range(2)]
    b0 = [model.nodes[0].linear.bias[j] for j in range(2)]
    first = [jax.nn.relu(x @ h0[j] + b0[j]) for j in range(2)]
    for i, parent in enumerate([0, 1]):
        k1, c1 = model.nodes[1].linear.kernel[i], model.nodes[1].linear.bias[i]
        feat = jax.nn.relu(first[parent] @ k1 + c1)
        head = feat @ model.heads.head.kernel[i] + model.heads.head.bias[i]
        np.testing.assert_allclose(out[i], head, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# MTAN on ResNet-18


def _set_conv(conv, torch_conv):
    _set(conv.kernel, _a(torch_conv.weight).transpose(2, 3, 1, 0))


def _set_bn(bn, torch_bn):
    _set(bn.scale, _a(torch_bn.weight))
    _set(bn.bias, _a(torch_bn.bias))
    _set(bn.mean, _a(torch_bn.running_mean))
    _set(bn.var, _a(torch_bn.running_var))


def _set_block(block, torch_block):
    _set_conv(block.conv1, torch_block.conv1)
    _set_bn(block.bn1, torch_block.bn1)
    _set_conv(block.conv2, torch_block.conv2)
    _set_bn(block.bn2, torch_block.bn2)
    if torch_block.downsample is not None:
        _set_conv(block.proj, torch_block.downsample[0])
        _set_bn(block.proj_bn, torch_block.downsample[1])


def _stacked_1x1(linear, convs):
    _set(linear.kernel, np.stack([_a(c.weight)[:, :, 0, 0].T for c in convs]))
    _set(linear.bias, np.stack([_a(c.bias) for c in convs]))


def _stacked_bn(bn, bns):
    for name, attr in (("scale", "weight"), ("bias", "bias"), ("mean", "running_mean"),
                       ("var", "running_var")):  # fmt: skip
        _set(getattr(bn, name), np.stack([_a(getattr(b, attr)) for b in bns]))


@pytest.fixture(scope="module")
def mtan_pair(lib):
    torch.manual_seed(5)
    resnet = lib.resnet.resnet18()
    ref = lib.arch.MTAN(TASKS, lambda: resnet, _decoders(512), False, False, "cpu")
    with torch.no_grad():  # non-trivial batch norms
        for m in ref.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.1)
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    model = models.mtan(T, OUT, backbone="resnet18", in_channels=3, rngs=nnx.Rngs(0))
    stages = model.encoder.stages
    _set_conv(stages[0].stem, resnet.conv1)
    _set_bn(stages[0].stem_bn, resnet.bn1)
    for i in range(4):
        layer = getattr(resnet, f"layer{i + 1}")
        _set_block(stages[i].block1, layer[0])
        _set_block(stages[i].block2, layer[1])
    enc = ref.encoder
    for i in range(4):
        units = model.task_specific["attention"][i]
        att = enc.encoder_att[str(i)]
        _stacked_1x1(units.linear1, [att[t][0] for t in range(T)])
        _stacked_bn(units.bn1, [att[t][1] for t in range(T)])
        _stacked_1x1(units.linear2, [att[t][3] for t in range(T)])
        _stacked_bn(units.bn2, [att[t][4] for t in range(T)])
        if i < 3:
            _set_block(model.block_att[i].block, enc.encoder_block_att[i])
    return ref, model


@pytest.mark.parametrize("mode", ["eval", "train"])
def test_mtan_resnet18_matches_libmtl(mtan_pair, mode):
    ref, model = mtan_pair
    x = np.random.default_rng(0).standard_normal((4, 3, 64, 64)).astype(np.float32)
    getattr(ref, mode)()
    getattr(model, mode)()
    with torch.no_grad():
        want = np.stack([_a(r) for r in ref.encoder(torch.from_numpy(x))])  # (T, N, C, H, W)
    graphdef, state = nnx.split(model)
    got = jax.jit(lambda s, x: nnx.merge(graphdef, s).attended(x))(state, x.transpose(0, 2, 3, 1))
    got = np.asarray(got).transpose(0, 1, 4, 2, 3)
    assert got.shape == want.shape == (T, 4, 512, 2, 2)
    print(f"MTAN ({mode}): max |mtlx - LibMTL| = {np.max(np.abs(got - want)):.2e}")
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-4)


def test_mtan_resnet18_parameter_count_equals_libmtl(mtan_pair):
    ref, model = mtan_pair
    print(f"MTAN (ResNet-18): {_count(model)} parameters, LibMTL {_count_torch(ref)}")
    assert _count(model) == _count_torch(ref)  # encoder, attention, block_att and the decoders
