"""Seed 001 as executable tests: what PyTorch's ``backward()`` does, and what it does not do.

Seed 001 is a blog post about ``Tensor.backward()``. It builds a tiny two-weight chain

    x2 = x1 * w1,    y = x2 * w2,    L = Y - y

with x1 = 2, w1 = 5, w2 = 6 and Y = 10 in every element of 2x2 tensors, calls
``L.backward(torch.ones(2, 2))`` and reads x1.grad = -30, w1.grad = -12, w2.grad = -10.
Around that example it makes a handful of points that trip up newcomers:

* the ``gradient`` argument of ``backward()`` on a non-scalar output (it is dL/d(output),
  i.e. the vector in a vector-Jacobian product, and it is compulsory for non-scalars);
* gradients *accumulate* into ``.grad`` across backward calls;
* only leaf tensors get ``.grad`` filled in, and "leaf" means "not produced by an op";
* a graph can be walked backward only once unless ``retain_graph=True``;
* (our addition) ``detach()`` cuts a tensor out of the graph while sharing its storage.

Each test below states one of those points as an assertion that would fail if PyTorch
behaved differently, so the file doubles as documentation of the seed.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import pytest
import torch

SHAPE = (2, 2)

# Messages raised by autograd (checked against torch 2.15; matched on stable fragments).
NON_SCALAR_MSG = "grad can be implicitly created only for scalar outputs"
SECOND_BACKWARD_MSG = "backward through the graph a second time"
NON_LEAF_GRAD_WARNING = "not a leaf Tensor"
INPLACE_MSG = "modified by an inplace operation"


@dataclass
class SeedGraph:
    """The seed's network: leaves x1, w1, w2; intermediates x2, y; target Y; loss L."""

    x1: torch.Tensor
    w1: torch.Tensor
    w2: torch.Tensor
    x2: torch.Tensor
    y: torch.Tensor
    Y: torch.Tensor
    L: torch.Tensor

    @property
    def leaves(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.x1, self.w1, self.w2


def full(value: float, *, requires_grad: bool = False, **kwargs) -> torch.Tensor:
    """A 2x2 tensor filled with ``value``, created directly (so it is a leaf)."""
    return torch.full(SHAPE, value, requires_grad=requires_grad, **kwargs)


def make_leaves() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Fresh x1 = 2, w1 = 5, w2 = 6, each a leaf that requires grad."""
    return (
        full(2.0, requires_grad=True),
        full(5.0, requires_grad=True),
        full(6.0, requires_grad=True),
    )


def forward(x1: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor) -> SeedGraph:
    """Run the seed's forward pass on the given leaves, building a new graph."""
    x2 = x1 * w1
    y = x2 * w2
    Y = full(10.0)
    L = Y - y
    return SeedGraph(x1=x1, w1=w1, w2=w2, x2=x2, y=y, Y=Y, L=L)


def seed_graph() -> SeedGraph:
    return forward(*make_leaves())


def assert_filled(t: torch.Tensor | None, value: float) -> None:
    """``t`` exists, has the seed's shape and equals ``value`` in every element."""
    assert t is not None
    assert t.shape == SHAPE
    torch.testing.assert_close(t, torch.full(SHAPE, value, dtype=t.dtype, device=t.device))


def assert_seed_grads(g: SeedGraph, scale: float = 1.0) -> None:
    """The seed's gradients (-30, -12, -10), times ``scale`` for accumulated calls."""
    assert_filled(g.x1.grad, -30.0 * scale)
    assert_filled(g.w1.grad, -12.0 * scale)
    assert_filled(g.w2.grad, -10.0 * scale)


# --------------------------------------------------------------------------------------------
# 1. backward() on a non-scalar output and the meaning of its `gradient` argument
# --------------------------------------------------------------------------------------------


class TestGradientArgument:
    def test_backward_with_ones_reproduces_the_seed_gradients(self):
        """L.backward(ones) gives x1.grad = -30, w1.grad = -12, w2.grad = -10 everywhere.

        By the chain rule dL/dx1 = -w1*w2 = -30, dL/dw1 = -x1*w2 = -12 and
        dL/dw2 = -x2 = -x1*w1 = -10. Passing ones as ``gradient`` says "dL/dL = 1 in every
        element", so autograd returns exactly these hand-derived values.
        """
        g = seed_graph()
        assert_filled(g.x2, 10.0)
        assert_filled(g.y, 60.0)
        assert_filled(g.L, -50.0)

        g.L.backward(torch.ones(SHAPE))

        assert_seed_grads(g)

    def test_gradient_argument_is_the_vector_in_a_vector_jacobian_product(self):
        """``L.backward(gradient=v)`` computes v^T J, the same as ``(L * v).sum().backward()``.

        Autograd never builds the Jacobian of a tensor-valued output; it only knows how to
        push a vector back through it. ``gradient`` is that vector: the derivative of some
        (possibly unknown) scalar with respect to L. Weighting L by v and summing gives a
        scalar whose gradient is the same vector-Jacobian product.
        """
        v = torch.tensor([[1.0, -2.0], [0.5, 3.0]])

        by_gradient = seed_graph()
        by_gradient.L.backward(gradient=v)

        by_weighted_sum = seed_graph()
        (by_weighted_sum.L * v).sum().backward()

        for a, b in zip(by_gradient.leaves, by_weighted_sum.leaves, strict=True):
            torch.testing.assert_close(a.grad, b.grad)
        # The elementwise chain makes each Jacobian diagonal, so v simply scales each entry.
        torch.testing.assert_close(by_gradient.x1.grad, -30.0 * v)
        torch.testing.assert_close(by_gradient.w1.grad, -12.0 * v)
        torch.testing.assert_close(by_gradient.w2.grad, -10.0 * v)

    def test_backward_from_an_intermediate_with_the_upstream_gradient(self):
        """Calling ``y.backward(dL/dy)`` gives the same leaf gradients as ``L.backward(ones)``.

        The seed's reading of ``gradient``: it is the derivative of the final loss with
        respect to the tensor you call backward on. Since L = Y - y, dL/dy = -1, so we can
        start the backward pass at y without ever forming L.
        """
        g = seed_graph()
        g.y.backward(-torch.ones(SHAPE))
        assert_seed_grads(g)

    def test_backward_without_gradient_on_a_non_scalar_raises(self):
        """A non-scalar output needs an explicit ``gradient``; only scalars get an implicit 1.

        For a scalar loss PyTorch assumes dL/dL = 1. For a 2x2 L there is no single obvious
        choice, so autograd refuses rather than guess, and no leaf receives a gradient.
        """
        g = seed_graph()
        with pytest.raises(RuntimeError, match=NON_SCALAR_MSG):
            g.L.backward()
        assert all(leaf.grad is None for leaf in g.leaves)

        g.L.sum().backward()  # a scalar is fine, and .sum() is the same as gradient=ones
        assert_seed_grads(g)


# --------------------------------------------------------------------------------------------
# 2. Gradients accumulate into .grad
# --------------------------------------------------------------------------------------------


class TestAccumulation:
    def test_two_backward_calls_without_zeroing_double_the_gradients(self):
        """Forward+backward twice on the same leaves adds up: -60, -24, -20.

        ``backward()`` *adds* into ``.grad`` instead of overwriting it. This is what lets
        several losses (or several micro-batches) contribute to one update, and it is why
        every training loop must clear gradients before each step.
        """
        leaves = make_leaves()
        for _ in range(2):
            g = forward(*leaves)
            g.L.backward(torch.ones(SHAPE))
        assert_seed_grads(g, scale=2.0)

    def test_gradients_from_different_outputs_add_up_in_a_shared_leaf(self):
        """A second loss that also uses x1 adds its gradient to x1.grad (the seed's L2 = x1*x1).

        d(x1*x1)/dx1 = 2*x1 = 4, so x1.grad goes from -30 to -26, while w1 and w2, which L2
        does not touch, keep their gradients.
        """
        g = seed_graph()
        g.L.backward(torch.ones(SHAPE))
        L2 = g.x1 * g.x1
        L2.backward(torch.ones(SHAPE))
        assert_filled(g.x1.grad, -30.0 + 4.0)
        assert_filled(g.w1.grad, -12.0)
        assert_filled(g.w2.grad, -10.0)

    @pytest.mark.parametrize("how", ["zero_", "set_to_none"])
    def test_clearing_grad_between_calls_restores_single_call_values(self, how):
        """Zeroing ``.grad`` in place, or setting it to None, undoes the accumulation.

        Both are what ``optimizer.zero_grad()`` does under the hood; after either, the
        second backward produces exactly the single-call gradients again.
        """
        leaves = make_leaves()
        forward(*leaves).L.backward(torch.ones(SHAPE))
        for leaf in leaves:
            if how == "zero_":
                leaf.grad.zero_()
                assert_filled(leaf.grad, 0.0)
            else:
                leaf.grad = None
        g = forward(*leaves)
        g.L.backward(torch.ones(SHAPE))
        assert_seed_grads(g)

    def test_optimizer_zero_grad_is_the_training_loop_reset(self):
        """``torch.optim.SGD.zero_grad()`` clears the leaves' gradients between iterations.

        This is the reason every training loop calls ``zero_grad()`` before ``backward()``:
        without it, each step would use the sum of all gradients so far. In current PyTorch
        the default is ``set_to_none=True``, so the gradients become None rather than zeros.
        """
        leaves = make_leaves()
        optimizer = torch.optim.SGD(leaves, lr=0.1)

        forward(*leaves).L.backward(torch.ones(SHAPE))
        optimizer.zero_grad()
        assert all(leaf.grad is None for leaf in leaves)

        g = forward(*leaves)
        g.L.backward(torch.ones(SHAPE))
        assert_seed_grads(g)

        # And the (single-call) gradients are what the optimizer steps with: w <- w - lr*grad.
        optimizer.step()
        assert_filled(g.x1.detach(), 2.0 + 0.1 * 30.0)
        assert_filled(g.w1.detach(), 5.0 + 0.1 * 12.0)
        assert_filled(g.w2.detach(), 6.0 + 0.1 * 10.0)


# --------------------------------------------------------------------------------------------
# 3. Leaf vs non-leaf tensors
# --------------------------------------------------------------------------------------------


class TestLeaves:
    def test_created_tensors_are_leaves_computed_ones_are_not(self):
        """x1, w1, w2 are leaves (no grad_fn); x2, y and L record the op that made them.

        ``grad_fn`` is the node autograd walks back through. Tensors you create yourself
        have none: they are where the backward pass stops and stores ``.grad``.
        """
        g = seed_graph()
        for leaf in g.leaves:
            assert leaf.is_leaf and leaf.requires_grad
            assert leaf.grad_fn is None
        for inner in (g.x2, g.y, g.L):
            assert not inner.is_leaf and inner.requires_grad
            assert inner.grad_fn is not None
        assert type(g.x2.grad_fn).__name__ == "MulBackward0"
        assert type(g.L.grad_fn).__name__ == "SubBackward0"
        # grad_fn links back through the chain: L <- y <- x2.
        assert g.L.grad_fn.next_functions[1][0] is g.y.grad_fn
        # A tensor that does not require grad is also a leaf, just one that gets no .grad.
        assert g.Y.is_leaf and not g.Y.requires_grad

    def test_non_leaf_grad_is_none_after_backward_and_accessing_it_warns(self):
        """After backward, x2.grad and y.grad are None, and reading them emits a UserWarning.

        Autograd computes dL/dx2 on the way to the leaves but throws it away to save memory.
        PyTorch warns because reading a non-leaf's ``.grad`` is almost always a mistake.
        """
        g = seed_graph()
        g.L.backward(torch.ones(SHAPE))
        for inner in (g.x2, g.y):
            with pytest.warns(UserWarning, match=NON_LEAF_GRAD_WARNING):
                assert inner.grad is None
        assert_seed_grads(g)

    def test_retain_grad_keeps_the_gradient_of_an_intermediate(self):
        """With ``retain_grad()``, x2.grad = dL/dx2 = -w2 = -6 and y.grad = dL/dy = -1.

        ``retain_grad()`` asks autograd to keep the intermediate gradient it computes anyway;
        it is how you inspect the signal flowing through a hidden layer. No warning then.
        """
        g = seed_graph()
        g.x2.retain_grad()
        g.y.retain_grad()
        g.L.backward(torch.ones(SHAPE))
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert_filled(g.x2.grad, -6.0)
            assert_filled(g.y.grad, -1.0)
        # The chain rule step by step: dL/dx1 = dL/dx2 * w1.
        torch.testing.assert_close(g.x1.grad, g.x2.grad * g.w1.detach())

    def test_arithmetic_on_a_requires_grad_tensor_makes_a_non_leaf(self):
        """``2 * torch.ones(..., requires_grad=True)`` is NOT a leaf; the ones tensor is.

        The seed's warning: build a parameter with arithmetic and the result has a grad_fn,
        so its ``.grad`` stays None. Create it with its value directly to get a leaf.
        """
        ones = torch.ones(SHAPE, requires_grad=True)
        x1 = 2 * ones
        assert not x1.is_leaf
        (x1 * 5.0).sum().backward()
        with pytest.warns(UserWarning, match=NON_LEAF_GRAD_WARNING):
            assert x1.grad is None
        assert_filled(ones.grad, 10.0)  # the gradient went to the real leaf, times 2

        direct = torch.full(SHAPE, 2.0, requires_grad=True)
        assert direct.is_leaf

    def test_dtype_conversion_that_copies_makes_a_non_leaf(self):
        """``w.to(torch.float64)`` of a float32 leaf is a non-leaf; gradients reach the float32 w.

        A conversion that copies is an op like any other (grad_fn ToCopyBackward0), so the
        optimizer's parameter must be the original tensor, not the converted copy.
        """
        w = full(6.0, requires_grad=True)
        w64 = w.to(torch.float64)
        assert not w64.is_leaf and w64.grad_fn is not None
        assert w64.dtype == torch.float64

        (w64 * 3.0).sum().backward()
        assert w.grad is not None and w.grad.dtype == torch.float32  # cast back on the way
        assert_filled(w.grad, 3.0)

        # A conversion that does not copy returns the very same (leaf) tensor.
        same = w.to(torch.float32)
        assert same is w and same.is_leaf

    def test_creating_a_tensor_with_the_target_dtype_gives_a_leaf(self):
        """``torch.ones(..., dtype=torch.float64, requires_grad=True)`` is a leaf and gets .grad."""
        w = torch.ones(SHAPE, dtype=torch.float64, requires_grad=True)
        assert w.is_leaf and w.grad_fn is None
        (w * 3.0).sum().backward()
        assert_filled(w.grad, 3.0)
        assert w.grad.dtype == torch.float64

    @pytest.mark.gpu
    def test_device_conversion_that_copies_makes_a_non_leaf(self):
        """``w.to('cuda')`` of a CPU leaf is a non-leaf; creating on the device gives a leaf.

        This is why parameters are moved with ``module.to(device)`` (which moves the
        parameter data in place) or created on the device, not with ``param.to(device)``.
        """
        w = full(6.0, requires_grad=True)
        w_cuda = w.to("cuda")
        assert not w_cuda.is_leaf and w_cuda.grad_fn is not None
        (w_cuda * 3.0).sum().backward()
        assert w.grad is not None and w.grad.device.type == "cpu"
        assert_filled(w.grad, 3.0)

        on_device = torch.ones(SHAPE, device="cuda", requires_grad=True)
        assert on_device.is_leaf and on_device.grad_fn is None
        (on_device * 3.0).sum().backward()
        assert on_device.grad.device.type == "cuda"
        assert_filled(on_device.grad, 3.0)


# --------------------------------------------------------------------------------------------
# 4. retain_graph
# --------------------------------------------------------------------------------------------


class TestRetainGraph:
    def test_second_backward_through_the_same_graph_raises(self):
        """By default a graph can be walked backward only once.

        Backward frees the intermediate values the graph saved (here x2 and w2 for y's
        multiply) as it goes, so a second pass has nothing to multiply with. The first
        call's gradients are kept; the failed second call adds nothing.
        """
        g = seed_graph()
        g.L.backward(torch.ones(SHAPE))
        with pytest.raises(RuntimeError, match=SECOND_BACKWARD_MSG):
            g.L.backward(torch.ones(SHAPE))
        assert_seed_grads(g)

    def test_retain_graph_allows_a_second_backward_which_accumulates(self):
        """With ``retain_graph=True`` the second backward works, and the grads double.

        Keeping the saved tensors costs memory; it is needed when two losses share part of a
        graph and each is backpropagated separately. The accumulation rule still applies.
        """
        g = seed_graph()
        g.L.backward(torch.ones(SHAPE), retain_graph=True)
        assert_seed_grads(g)
        g.L.backward(torch.ones(SHAPE))
        assert_seed_grads(g, scale=2.0)
        # The second call did not retain, so a third one fails again.
        with pytest.raises(RuntimeError, match=SECOND_BACKWARD_MSG):
            g.L.backward(torch.ones(SHAPE))


# --------------------------------------------------------------------------------------------
# 5. detach()
# --------------------------------------------------------------------------------------------


class TestDetach:
    def test_detached_tensor_shares_storage_but_leaves_the_graph(self):
        """``y.detach()`` has y's values and memory, but requires_grad False and no grad_fn."""
        g = seed_graph()
        d = g.y.detach()
        assert d.data_ptr() == g.y.data_ptr()
        torch.testing.assert_close(d, g.y.detach().clone())
        assert not d.requires_grad
        assert d.grad_fn is None and d.is_leaf
        assert g.y.requires_grad and g.y.grad_fn is not None  # the original is unchanged

    def test_no_gradient_flows_back_through_a_detach(self):
        """If x2 is detached before use, x1 and w1 get no gradient; w2 still gets -10.

        ``detach()`` is a wall for the backward pass: everything upstream of it is treated
        as a constant. This is how you freeze part of a model or stop a target from being
        trained towards the prediction.
        """
        x1, w1, w2 = make_leaves()
        x2 = x1 * w1
        y = x2.detach() * w2
        L = full(10.0) - y
        L.backward(torch.ones(SHAPE))

        assert w1.grad is None
        assert x1.grad is None
        assert_filled(w2.grad, -10.0)

    def test_in_place_change_to_a_detached_tensor_changes_the_original(self):
        """Writing into ``y.detach()`` in place rewrites y itself, because memory is shared.

        It also bumps the version counter the two tensors share, so if autograd had saved y
        for backward, the next backward refuses to use the stale graph instead of silently
        computing a wrong gradient. Use ``detach().clone()`` when you need an independent copy.
        """
        g = seed_graph()
        version_before = g.y._version
        d = g.y.detach()
        d.add_(1.0)
        assert_filled(g.y.detach(), 61.0)
        assert g.y._version > version_before

        copy = g.y.detach().clone()
        copy.zero_()
        assert_filled(g.y.detach(), 61.0)  # a clone does not touch y

        # y is saved by y * y's backward; the in-place edit invalidates that saved value.
        x1, w1, w2 = make_leaves()
        y = forward(x1, w1, w2).y
        z = y * y
        y.detach().add_(1.0)
        with pytest.raises(RuntimeError, match=INPLACE_MSG):
            z.sum().backward()
