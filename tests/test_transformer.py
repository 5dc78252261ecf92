"""The autoregressive family: causal masking, the KV cache, sampling, tokenizers, exact NLL, text data, and one
tiny end-to-end run on text through `train(cfg)` and ``sample.py``."""

from __future__ import annotations

import itertools
import json
import math
from functools import partial

import pytest
import torch
import torch.nn.functional as F
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from gensuite.cli.config import instantiate_checked
from gensuite.data.text import PydocText, TextFile, split_blocks, split_documents
from gensuite.errors import ConfigError, DataError
from gensuite.families.autoregressive import Autoregressive
from gensuite.nets.tokenizers import ByteTokenizer, PixelTokenizer, for_data
from gensuite.nets.transformer import Transformer, sample_from_logits, window_start
from gensuite.train import train

from .conftest import run_entry

TINY_NET = {"width": 32, "depth": 2, "heads": 2}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny nets run fastest on one thread (token-by-token sampling is thousands of tiny ops); restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_net(positions: str = "rope", context: int = 16, vocab: int = 11, **kw) -> Transformer:
    torch.manual_seed(0)
    return Transformer(vocab_size=vocab, context=context, positions=positions, **(TINY_NET | kw)).eval()


# -- the sequence model -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("positions", ["rope", "learned"])
def test_changing_a_future_token_never_changes_earlier_logits(positions):
    net = tiny_net(positions)
    x = torch.randint(0, 11, (2, 16))
    base = net(x)
    for t in (0, 7, 15):
        y = x.clone()
        y[:, t] = (y[:, t] + 1) % 11
        out = net(y)
        torch.testing.assert_close(out[:, :t], base[:, :t], rtol=0, atol=0)
        assert not torch.allclose(out[:, t], base[:, t])


@pytest.mark.parametrize("positions", ["rope", "learned"])
def test_cached_forward_gives_the_logits_of_the_full_forward(positions):
    net = tiny_net(positions)
    x = torch.randint(0, 11, (3, 12))
    full = net(x)
    cache = net.new_cache(3)
    parts = [net(x[:, :5], cache), net(x[:, 5:6], cache), net(x[:, 6:9], cache), net(x[:, 9:], cache)]
    torch.testing.assert_close(torch.cat(parts, 1), full, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("positions", ["rope", "learned"])
@pytest.mark.parametrize("sampling", [{}, {"temperature": 0.8, "top_k": 5}, {"top_p": 0.9}, {"temperature": 0}])
def test_kv_cache_sampling_equals_uncached_sampling(positions, sampling):
    """Same seed, same tokens — also past the context (40 tokens, context 16: sliding windows)."""
    net = tiny_net(positions)
    cached = net.generate(4, 40, generator=torch.Generator().manual_seed(3), use_cache=True, **sampling)
    plain = net.generate(4, 40, generator=torch.Generator().manual_seed(3), use_cache=False, **sampling)
    assert torch.equal(cached, plain)
    assert cached.shape == (4, 40) and cached.max() < 11  # never the bos id


def test_generation_keeps_the_prompt_and_is_seeded():
    net = tiny_net()
    prompt = torch.randint(0, 11, (2, 5))
    a = net.generate(2, 12, generator=torch.Generator().manual_seed(0), prompt=prompt)
    b = net.generate(2, 12, generator=torch.Generator().manual_seed(0), prompt=prompt)
    c = net.generate(2, 12, generator=torch.Generator().manual_seed(1), prompt=prompt)
    assert torch.equal(a[:, :5], prompt) and torch.equal(a, b) and not torch.equal(a, c)


def test_windows_never_exceed_the_context_and_slide_by_context_minus_keep():
    context, keep = 8, 3
    starts = [window_start(j, context, keep) for j in range(40)]
    assert all(1 + j - s <= context for j, s in enumerate(starts))  # bos + tokens[s:j]
    assert starts[:8] == [0] * 8 and starts[8] == 8 - keep
    assert len(set(starts)) == 1 + math.ceil((40 - context) / (context - keep))


def test_top_k_top_p_and_greedy_sampling():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]])).repeat(2000, 1)
    g = torch.Generator().manual_seed(0)
    free = sample_from_logits(logits, g)
    assert set(free.tolist()) == {0, 1, 2, 3}
    assert abs((free == 0).float().mean().item() - 0.5) < 0.05
    assert set(sample_from_logits(logits, g, top_k=2).tolist()) == {0, 1}
    assert set(sample_from_logits(logits, g, top_p=0.7).tolist()) == {0, 1}  # 0.5 < 0.7 <= 0.8
    assert set(sample_from_logits(logits, g, top_p=0.01).tolist()) == {0}
    assert set(sample_from_logits(logits, g, temperature=0).tolist()) == {0}


def test_weight_decay_only_on_linear_weights():
    net = tiny_net("learned")
    decay, rest = net.parameter_groups(0.1)
    assert decay["weight_decay"] == 0.1 and rest["weight_decay"] == 0.0
    decayed = {id(p) for p in decay["params"]}
    names = {n for n, p in net.named_parameters() if id(p) in decayed}
    assert names and all(n.endswith("weight") and ("qkv" in n or "proj" in n or "fc" in n) for n in names)
    assert id(net.tok_emb.weight) not in decayed and id(net.pos_emb.weight) not in decayed
    assert len(decay["params"]) + len(rest["params"]) == len(list(net.parameters()))


def test_bad_sizes_fail_at_construction_naming_the_keys():
    with pytest.raises(ConfigError) as info:
        Transformer(vocab_size=10, context=8, width=30, heads=4)
    assert set(info.value.keys) == {"width", "heads"}
    with pytest.raises(ConfigError, match="positions"):
        Transformer(vocab_size=10, context=8, width=32, heads=2, positions="sinusoid")


# -- tokenizers -------------------------------------------------------------------------------------------------
def test_bytes_tokenizer_round_trips_exactly():
    tok = ByteTokenizer()
    text = "def f(x):\n    return x ** 2  # ünïcödé → ✓ 😀"
    ids = tok.encode_text(text)
    assert ids.max() < 256 and len(ids) == len(text.encode("utf-8"))
    assert tok.decode(tok.encode(ids[None])) == [text]
    assert tok.characters(ids[None]).item() == len(text)


@pytest.mark.parametrize("levels", [256, 16, 7, 2])
def test_pixel_tokenizer_round_trips_up_to_quantisation(levels):
    tok = PixelTokenizer(channels=3, image_size=4, levels=levels)
    x = torch.randint(0, 256, (5, 3, 4, 4)).float() / 255
    tokens = tok.encode(x)
    assert tokens.shape == (5, 48) and tokens.max() < levels
    # raster order, channels of a pixel next to each other
    assert torch.equal(tokens.view(5, 4, 4, 3), tok.encode(x).view(5, 16, 3).view(5, 4, 4, 3))
    assert torch.equal(tok.encode(x)[:, :3], tok.level_of[(x[:, :, 0, 0] * 255).round().long()])
    back = tok.decode(tokens)
    err = (back - x).abs().max().item() * 255
    if levels == 256:
        assert err == 0
    else:
        assert err <= (256 / levels) / 2 + 1e-3
    assert torch.equal(tok.encode(back), tokens)


@pytest.mark.parametrize("levels", [256, 10, 3])
def test_pixel_likelihood_of_8bit_values_sums_to_one(levels):
    """A uniform model over the levels, dequantised: the probabilities of all 256 8-bit values add up to 1."""
    tok = PixelTokenizer(channels=1, image_size=1, levels=levels)
    values = torch.arange(256).float().div(255).view(256, 1, 1, 1)
    tokens = tok.encode(values)
    nats = math.log(levels) + tok.dequantisation_nats(tokens)
    assert torch.exp(-nats).sum().item() == pytest.approx(1.0, abs=1e-5)


def test_auto_tokenizer_follows_the_data_modality():
    assert isinstance(for_data("text"), ByteTokenizer)
    pix = for_data("image", channels=1, image_size=28, levels=16)
    assert isinstance(pix, PixelTokenizer) and pix.seq_len == 784 and pix.vocab_size == 16
    with pytest.raises(ConfigError, match="modality"):
        for_data("audio")


# -- the family: exact likelihood -------------------------------------------------------------------------------
def byte_model(context: int = 16, **kw) -> Autoregressive:
    torch.manual_seed(0)
    return Autoregressive(net=partial(Transformer, **TINY_NET), tokenizer=ByteTokenizer(), context=context, **kw)


def test_nll_in_bits_is_the_cross_entropy_in_nats_over_ln2():
    model = byte_model().eval()
    tokens = torch.randint(0, 256, (3, 16))
    batch = (tokens, torch.full((3,), -1))
    # independent reference: log-softmax of one forward over [bos, x_0..x_14], gathered at x_0..x_15
    inp = torch.cat([torch.full((3, 1), 256), tokens[:, :-1]], 1)
    logp = F.log_softmax(model.net(inp), -1).gather(-1, tokens[..., None]).squeeze(-1)
    ce_nats = -logp.mean()
    bits_per_token = model.nll(batch).mean() / (16 * math.log(2))
    assert bits_per_token.item() == pytest.approx(ce_nats.item() / math.log(2), rel=1e-5)
    assert model.losses(batch)["loss"].item() == pytest.approx(ce_nats.item(), rel=1e-5)


def test_model_overfits_a_tiny_sequence():
    model = byte_model(context=32)
    text = torch.tensor(list(b"the cat sat on the mat. " * 2))[None, :32].repeat(8, 1)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(150):
        loss = model.losses((text,))["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.1, loss.item()
    model.eval()
    out = model.net.generate(1, 32, generator=torch.Generator().manual_seed(0), temperature=0)
    assert model.decode(out)[0] == bytes(text[0].tolist()).decode()


def test_context_shorter_than_an_image_fails_at_construction():
    tok = PixelTokenizer(channels=1, image_size=8)
    with pytest.raises(ConfigError) as info:
        Autoregressive(net=partial(Transformer, **TINY_NET), tokenizer=tok, context=32)
    assert info.value.keys == ("context",) and "64" in info.value.fix


# -- text data --------------------------------------------------------------------------------------------------
def test_pydoc_validation_is_whole_topics_spread_over_the_text():
    a, b = PydocText(seq_len=64), PydocText(seq_len=64)
    a.setup(), b.setup()
    assert torch.equal(a.val.data, b.val.data) and torch.equal(a.train.data, b.train.data)
    total = a.train_bytes + a.val_bytes
    assert 400_000 < total < 1_000_000 and 0.08 < a.val_bytes / total < 0.12
    raw = a.load_bytes()
    lengths = a.document_lengths(raw)
    assert sum(lengths) == len(raw) == total
    train, val = split_documents(lengths, 0.1)
    starts = {0, *itertools.accumulate(lengths)}
    assert all(p.start in starts and p.stop in starts for p in train + val)  # cut at topic ends only
    assert val[0].start < total // 5 and val[-1].start > total * 4 // 5  # from the whole text, not its end
    cover = sorted((s.start, s.stop) for s in train + val)
    assert all(x[1] == y[0] for x, y in zip(cover, cover[1:], strict=False)) and cover[-1][1] == total
    train_text, val_text = a.text("train"), a.text("val")
    topics = a.topics()
    held = [t for t in topics if t in val_text]
    assert len(held) >= 10 and not any(t in train_text for t in held)  # no validation topic is trained on
    assert "never trained on" in a.describe()
    x, y = next(iter(a.val_dataloader()))
    assert x.dtype == torch.int64 and x.shape == (64, 64) and (y == -1).all()
    assert len(a.val) == a.val_bytes // 64  # non-overlapping validation windows


def test_split_documents_keeps_the_fraction_and_whole_documents():
    lengths = [100, 5000, 30, 30, 800, 2000, 10, 700, 4000, 90] * 5
    train, val = split_documents(lengths, 0.2)
    held = sum(p.stop - p.start for p in val)
    assert 0.15 < held / sum(lengths) < 0.25
    assert {p.stop - p.start for p in val} <= set(lengths)


def test_a_text_file_without_documents_is_split_into_blocks(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("abcdefghij" * 4000)
    data = TextFile(path=str(path), seq_len=16, split_block=1000)
    data.setup()
    assert data.val_bytes == 4000 and "blocks" in data.describe()
    train, val = split_blocks(40_000, 0.1, 1000)
    assert len(val) == 4 and val[0].start < 10_000 and val[-1].start > 30_000


@pytest.mark.parametrize(
    "content,match",
    [(b"", "empty"), (b"abc\x00\x01\x02" * 100, "binary"), ("héllo".encode("latin-1") * 100, "not UTF-8")],
)
def test_bad_text_files_give_a_clear_data_error(tmp_path, content, match):
    path = tmp_path / "t.txt"
    path.write_bytes(content)
    with pytest.raises(DataError, match=match):
        TextFile(path=str(path)).setup()


def test_missing_or_short_text_files_give_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        TextFile(path=str(tmp_path / "nope.txt")).setup()
    with pytest.raises(ConfigError, match="data.path"):
        TextFile(path=None)
    (tmp_path / "short.txt").write_text("hello world\n" * 20)
    with pytest.raises(DataError) as info:
        TextFile(path=str(tmp_path / "short.txt"), seq_len=256).setup()
    assert "data.seq_len" in info.value.fix


# -- configs and one run ----------------------------------------------------------------------------------------
def test_data_choice_picks_tokenizer_and_budget(make_cfg):
    text = make_cfg(["model=transformer", "data=pydoc"], tiny=False)
    assert isinstance(instantiate_checked(text, "model").tokenizer, ByteTokenizer)
    assert text.model.context == text.data.seq_len and text.trainer.val_check_interval
    image = make_cfg(["model=transformer", "data=digits"], tiny=False)
    model = instantiate_checked(image, "model")
    assert isinstance(model.tokenizer, PixelTokenizer) and model.context == 64
    assert image.trainer.max_steps != text.trainer.max_steps
    named = make_cfg(["model=transformer", "data=digits", "model/tokenizer=pixels", "model.tokenizer.levels=16"])
    assert instantiate_checked(named, "model").tokenizer.vocab_size == 16


def test_image_tokenizer_on_text_data_fails_before_training(make_cfg, tmp_path):
    (tmp_path / "t.txt").write_text("some text to model. " * 400)
    cfg = make_cfg(["model=transformer", "data=text", f"data.path={tmp_path / 't.txt'}", "model/tokenizer=pixels",
                    "model.tokenizer.channels=1", "model.tokenizer.image_size=8"])  # fmt: skip
    with pytest.raises(ConfigError, match="model/tokenizer=bytes"):
        train(cfg)


@pytest.fixture(scope="module")
def text_run(tmp_path_factory, cache_dir):
    from .conftest import TINY, compose_cfg

    folder = tmp_path_factory.mktemp("text_run")
    (folder / "corpus.txt").write_text("The quick brown fox jumps over the lazy dog; ünïcödé too.\n" * 300)
    overrides = TINY + [
        f"paths.cache_dir={cache_dir}",
        "model=transformer",
        "data=text",
        f"data.path={folder / 'corpus.txt'}",
        "data.seq_len=32",
        "data.batch_size=8",
        "model.net.width=32",
        "model.net.depth=1",
        "model.net.heads=2",
        "model.text_length=48",
        "model.text_samples=2",
        "trainer.max_steps=3",
        "trainer.val_check_interval=null",
        "trainer.precision=32-true",
        "model.scheduler.warmup_steps=1",
    ]
    out = folder / "run"
    return train(compose_cfg(overrides, out)), out


def test_text_run_reports_exact_bits_perplexity_and_throughput(text_run):
    result, out = text_run
    m = json.loads((out / "metrics.json").read_text())
    for key in ("val/nll_bpd", "val/bits_per_char", "val/perplexity", "val/loss", "time/train_tokens_per_s"):
        assert key in m, key
    assert m["val/perplexity"] == pytest.approx(math.exp(m["val/loss"]), rel=1e-3)
    assert m["val/nll_bpd"] == pytest.approx(m["val/loss"] / math.log(2), rel=1e-4)
    # 2 non-ASCII characters of 2 bytes in every 59-byte line: fewer characters than bytes
    assert m["val/bits_per_char"] > m["val/nll_bpd"]
    assert not any(k.startswith("val/fid") for k in m)  # no image metrics on text
    assert result["trainer"].global_step == 3


def test_text_samples_reach_tensorboard_and_a_text_file(text_run):
    _, out = text_run
    assert (out / "samples.txt").read_text().count("sample ") == 2
    acc = EventAccumulator(str(out / "tensorboard"), size_guidance={"tensors": 0})
    acc.Reload()
    assert "samples/samples/text_summary" in acc.Tags()["tensors"]


def test_sample_entry_point_writes_text(text_run, tmp_path):
    _, out = text_run
    path = tmp_path / "s.txt"
    proc = run_entry("sample.py", f"ckpt_path={out / 'checkpoints' / 'last.ckpt'}", "n=3", f"out={path}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert path.read_text().count("\n\n-----\n\n") == 2


def test_eval_reproduces_the_text_metrics(text_run, cache_dir):
    from gensuite.eval import evaluate

    from .conftest import compose_cfg

    _, out = text_run
    cfg = compose_cfg(
        [
            f"ckpt_path={out / 'checkpoints' / 'last.ckpt'}",
            "use_run_metrics=false",
            f"out={out / 'eval.json'}",
            f"data_path={out.parent / 'corpus.txt'}",  # a path stored in a checkpoint is never followed by itself
        ],
        config_name="eval",
    )
    trained = json.loads((out / "metrics.json").read_text())
    evaluated = evaluate(cfg)
    for key in ("val/nll_bpd", "val/bits_per_char", "val/perplexity"):
        assert evaluated[key] == pytest.approx(trained[key], rel=1e-4), key


def test_warmup_cosine_schedule_and_its_open_ended_form():
    """A step budget decays the rate by cosine; a time budget (no total) by the clock's progress, else holds it."""
    from gensuite.families.lr_schedules import warmup_cosine

    def rates(total):
        opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
        f = warmup_cosine(opt, warmup_steps=10, total_steps=total).lr_lambdas[0]
        return [round(f(s), 3) for s in (0, 9, 60, 110, 10_000)]

    assert rates(110) == [0.1, 1.0, 0.55, 0.1, 0.1]
    assert rates(None) == [0.1, 1.0, 1.0, 1.0, 1.0]
    # a time budget: after the warm-up the cosine follows the clock's fraction of the budget, not the step
    spent = [0.0]
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    f = warmup_cosine(opt, warmup_steps=10, total_steps=None, progress=lambda: spent[0]).lr_lambdas[0]
    assert f(5) == pytest.approx(0.6) and f(500) == 1.0
    spent[0] = 0.5
    assert f(20) == pytest.approx(0.55) and f(5) == pytest.approx(0.6)
    spent[0] = 1.0
    assert f(11) == pytest.approx(0.1)
    with pytest.warns(UserWarning, match="warming up over 2"):  # a smoke run shorter than the warm-up
        assert rates(5)[0] == 0.5
