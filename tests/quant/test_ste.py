

def test_stochastic_sign_is_unbiased_and_passes_the_tanh_gradient():
    import torch

    from megabit.quant.ste import stochastic_sign_ste

    x = torch.tensor([-2.0, -0.3, 0.0, 0.7, 3.0]).repeat(20000, 1).requires_grad_(True)
    b = stochastic_sign_ste(x, torch.Generator().manual_seed(1))
    assert set(b.unique().tolist()) == {-1.0, 1.0}
    assert torch.allclose(b.mean(0), torch.tanh(x[0]), atol=0.035)  # 5 sigma at n = 20000
    b.sum().backward()
    assert torch.allclose(x.grad[0], 1 - torch.tanh(x[0].detach()) ** 2)
