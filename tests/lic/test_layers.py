import torch

from megabit.models.lic import GDN, LowerBound, MaskedConv2d


def test_gdn_matches_formula():
    g = GDN(3)
    with torch.no_grad():
        g.beta.copy_(g.beta_reparam.init(torch.tensor([1.0, 2.0, 0.5])))
        gamma = torch.tensor([[0.1, 0.2, 0.0], [0.0, 0.3, 0.1], [0.05, 0.0, 0.2]])
        g.gamma.copy_(g.gamma_reparam.init(gamma))
    x = torch.randn(2, 3, 4, 5)
    ref = x / torch.sqrt(torch.tensor([1.0, 2.0, 0.5]).view(1, 3, 1, 1) + torch.einsum("ij,bjhw->bihw", gamma, x * x))
    assert torch.allclose(g(x), ref, atol=1e-5)
    gi = GDN(3, inverse=True)
    gi.load_state_dict(g.state_dict())
    assert torch.allclose(gi(x), x * x / ref, atol=1e-4)


def test_lower_bound_gradient_lets_values_climb_back():
    lb = LowerBound(1.0)
    x = torch.tensor([0.5, 2.0], requires_grad=True)
    y = lb(x)
    assert y.tolist() == [1.0, 2.0]
    (-y.sum()).backward()  # gradient pushes x up: passes even below the bound
    assert x.grad.tolist() == [-1.0, -1.0]
    x.grad = None
    lb(x).sum().backward()  # would push x further down below the bound: blocked
    assert x.grad.tolist() == [0.0, 1.0]


def test_masked_conv_is_causal():
    m = MaskedConv2d(1, 1, kernel_size=5, padding=2)
    x = torch.zeros(1, 1, 7, 7)
    base = m(x)
    x2 = x.clone()
    x2[0, 0, 3, 3] = 1.0  # the centre itself and later pixels must not influence position (3, 3)
    x2[0, 0, 4, 0] = 1.0
    assert torch.equal(m(x2)[0, 0, 3, 3], base[0, 0, 3, 3])
    x3 = x.clone()
    x3[0, 0, 3, 2] = 1.0
    assert not torch.equal(m(x3)[0, 0, 3, 3], base[0, 0, 3, 3])
