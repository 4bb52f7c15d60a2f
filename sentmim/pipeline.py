"""SentenceMIMPipeline: the text-level API (sentences in, vectors or sentences out).

    pipe = SentenceMIMPipeline.from_pretrained("path/to/model")   # model + the tokenizer saved beside it
    pipe.encode(["a sentence"])            # posterior means, [N, latent]
    pipe.decode(z)                         # greedy by default; any `SentenceMIMModel.decode` option
    pipe.reconstruct(["a sentence"])       # decode(encode(x)); also from a posterior sample or a perturbed mean
    pipe.interpolate("first", "second", steps=8)   # steps + 2 sentences, endpoints included
    pipe.sample(n=10, temperature=1.0)     # z from the prior N(0, I)
    pipe.sample(n=10, prior="aggregate")   # z from the aggregate posterior fitted after training (what works for
                                           # sMIM, whose codes sit near the origin where N(0, I) samples never go)

Sentences longer than the model's maximum length are truncated (the EOS is kept) and a warning says how many.
An empty string is a valid sentence: it encodes as BOS EOS. Unknown words become the unknown token.
"""

import logging
import math
import numbers
import os
from pathlib import Path

import torch

from . import gaussian
from .aggregate_posterior import AGGREGATE_POSTERIOR_FILE, AggregatePosterior
from .batching import collate_batch
from .model_folder import load_config, load_model
from .modeling import SentenceMIMModel
from .preprocessing import truncate_keeping_eos
from .tokenization import decode_keep_unknown, load_tokenizer

logger = logging.getLogger(__name__)


def slerp(start: torch.Tensor, end: torch.Tensor, fractions: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation, sin((1-t) w) / sin w * start + sin(t w) / sin w * end with w the angle between them
    (constant angular speed on the sphere for vectors of equal norm); linear when the vectors are parallel."""
    cosine = torch.dot(start, end) / (start.norm() * end.norm()).clamp(min=1e-12)
    angle = torch.acos(cosine.clamp(-1.0, 1.0))
    if angle.item() < 1e-6:
        return torch.lerp(start[None], end[None], fractions[:, None])
    weights_start = torch.sin((1 - fractions) * angle) / torch.sin(angle)
    weights_end = torch.sin(fractions * angle) / torch.sin(angle)
    return weights_start[:, None] * start[None] + weights_end[:, None] * end[None]


def max_sentence_length(config, tokenizer=None) -> int:
    """The longest tokenized sentence, BOS and EOS included, that a model with this config takes: its
    max_position_embeddings, bounded by the tokenizer's model_max_length (a tokenizer without a limit reports a huge
    sentinel). Decoding generates at most this minus one tokens: BOS is given, never generated."""
    limit = config.max_position_embeddings
    tokenizer_limit = getattr(tokenizer, "model_max_length", None)
    if tokenizer_limit and tokenizer_limit < 1_000_000:
        limit = min(limit, tokenizer_limit)
    return limit


class SentenceMIMPipeline:
    def __init__(self, model: SentenceMIMModel, tokenizer, batch_size: int = 256, max_length: int | None = None,
                 aggregate_posterior: AggregatePosterior | None = None):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.tokenizer.padding_side = "right"
        self.batch_size = batch_size
        self.max_length = max_length or max_sentence_length(model.config, tokenizer)
        self.aggregate_posterior = aggregate_posterior
        self.source = None  # the folder it was loaded from, for messages

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | torch.device | None = None, **kwargs):
        """Model and tokenizer saved in `path`, and the aggregate posterior when the folder has one (training fits
        it); never runs code from the folder (sentmim.model_folder)."""
        path = Path(path)
        model = load_model(path, load_config(path))  # weights last: a folder a run is still publishing has none
        tokenizer = load_tokenizer(path)
        if device is not None:
            model = model.to(device)
        if (path / AGGREGATE_POSTERIOR_FILE).is_file():
            kwargs.setdefault("aggregate_posterior", AggregatePosterior.load(path, model.config.latent_size))
        pipe = cls(model, tokenizer, **kwargs)
        pipe.source = path
        return pipe

    def save_pretrained(self, path: str | Path) -> None:
        """Model, tokenizer and (when there is one) the aggregate posterior, in one folder."""
        self.model.save_pretrained(path)
        self.tokenizer.save_pretrained(path)
        if self.aggregate_posterior is not None:
            self.aggregate_posterior.save(path)

    @property
    def device(self) -> torch.device:
        return self.model.device

    # -- sentences <-> token ids -------------------------------------------------------------------------------

    def _tokenize(self, sentences: list[str]) -> dict[str, torch.Tensor]:
        encoded = self.tokenizer(list(sentences), add_special_tokens=True, verbose=False)["input_ids"]
        too_long = sum(len(ids) > self.max_length for ids in encoded)
        if too_long:
            logger.warning(
                "%d of %d sentences exceed %d tokens and were truncated", too_long, len(encoded), self.max_length
            )
        eos = self.tokenizer.eos_token_id
        examples = [{"input_ids": truncate_keeping_eos(ids, self.max_length, eos)} for ids in encoded]
        batch = collate_batch(examples, self.tokenizer.pad_token_id)
        return {name: tensor.to(self.device) for name, tensor in batch.items()}

    def _to_text(self, token_ids: torch.Tensor) -> list[str]:
        # Keep <unk>: it is a word of the output (PTB references contain it), not markup.
        return [text.strip() for text in decode_keep_unknown(self.tokenizer, token_ids)]

    # -- the API -----------------------------------------------------------------------------------------------

    @torch.no_grad()
    def encode_posterior(self, sentences: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, logvar) of q(z|x) for each sentence, each [N, latent]."""
        if isinstance(sentences, str):
            raise TypeError("pass a list of sentences, e.g. pipe.encode([sentence])")
        for index, sentence in enumerate(sentences):
            if not isinstance(sentence, str):
                raise TypeError(f"sentences[{index}] is {type(sentence).__name__}, not a string: pass text only")
        means, logvars = [], []
        for start in range(0, len(sentences), self.batch_size):
            batch = self._tokenize(sentences[start : start + self.batch_size])
            mean, logvar = self.model.encode(batch["input_ids"], batch["attention_mask"])
            means.append(mean)
            logvars.append(logvar)
        if not means:
            size = self.model.config.latent_size
            return torch.empty(0, size, device=self.device), torch.empty(0, size, device=self.device)
        return torch.cat(means), torch.cat(logvars)

    def encode(self, sentences: list[str]) -> torch.Tensor:
        """Posterior means [N, latent]: the sentence vectors."""
        return self.encode_posterior(sentences)[0]

    def decode(self, z: torch.Tensor, **decode_kwargs) -> list[str]:
        """Sentences for latent codes [N, latent]; keyword arguments go to `SentenceMIMModel.decode`."""
        z = torch.as_tensor(z, dtype=self.model.dtype, device=self.device)
        if z.dim() == 1:
            z = z[None]
        if z.dim() != 2 or z.size(1) != self.model.config.latent_size:
            raise ValueError(f"z must be [N, {self.model.config.latent_size}], got shape {tuple(z.shape)}")
        decode_kwargs.setdefault("max_length", self.max_length - 1)  # BOS is given, never generated
        texts = []
        for start in range(0, z.size(0), self.batch_size):
            texts += self._to_text(self.model.decode(z[start : start + self.batch_size], **decode_kwargs))
        return texts

    def reconstruct(self, sentences: list[str], mode: str = "mean", noise: float = 0.1, **decode_kwargs) -> list[str]:
        """decode(encode(x)). mode: "mean" (posterior mean), "sample" (z ~ q(z|x)) or "perturb" (mean plus
        isotropic Gaussian noise of standard deviation `noise`, to probe the latent neighbourhood)."""
        mean, logvar = self.encode_posterior(sentences)
        if mode == "mean":
            z = mean
        elif mode == "sample":
            z = gaussian.sample(mean, logvar)
        elif mode == "perturb":
            z = mean + noise * torch.randn_like(mean)
        else:
            raise ValueError(f"mode={mode!r}: must be one of mean, sample, perturb")
        return self.decode(z, **decode_kwargs)

    def interpolation_latents(self, first: str, second: str, steps: int = 8, method: str = "linear") -> torch.Tensor:
        if not isinstance(steps, int) or steps < 0:
            raise ValueError(f"steps={steps!r}: must be an integer >= 0 (the number of points between the endpoints)")
        start, end = self.encode([first, second])
        fractions = torch.linspace(0.0, 1.0, steps + 2, device=self.device)
        if method == "linear":
            return torch.lerp(start[None], end[None], fractions[:, None])
        if method == "slerp":
            return slerp(start, end, fractions)
        raise ValueError(f"method={method!r}: must be linear or slerp")

    def interpolate(self, first: str, second: str, steps: int = 8, method: str = "linear", **decode_kwargs):
        """steps + 2 sentences decoded along the path between the posterior means; the endpoints are the two
        reconstructions."""
        return self.decode(self.interpolation_latents(first, second, steps, method), **decode_kwargs)

    def sample_latents(self, n: int = 10, prior: str = "standard", latent_temperature: float = 1.0,
                       generator: torch.Generator | None = None) -> torch.Tensor:
        """[n, latent] codes: from the prior N(0, latent_temperature^2 I) (prior="standard"), or from the aggregate
        posterior N(mean, latent_temperature^2 covariance) fitted to the training codes (prior="aggregate")."""
        if prior == "standard":
            z = torch.randn(n, self.model.config.latent_size, generator=generator, device=self.device)
            return z * latent_temperature
        if prior == "aggregate":
            if self.aggregate_posterior is None:
                where = f" in {self.source}" if self.source is not None else ""
                raise ValueError(
                    f"prior='aggregate': no aggregate posterior{where} ({AGGREGATE_POSTERIOR_FILE}; training writes "
                    "it at the end of a run): fit one with sentmim.aggregate_posterior.fit_aggregate_posterior(model, "
                    "train_batches).save(folder), or sample with prior='standard'"
                )
            z = self.aggregate_posterior.sample(n, generator, latent_temperature=latent_temperature)
            return z.to(device=self.device, dtype=self.model.dtype)
        raise ValueError(f"prior={prior!r}: must be 'standard' (N(0, I)) or 'aggregate' (fitted to the training "
                         "codes)")

    def sample(self, n: int = 10, temperature: float = 1.0, latent_temperature: float = 1.0, seed: int | None = None,
               prior: str = "standard", **decode_kwargs):
        """n sentences decoded from latent codes of `prior` ("standard": N(0, I); "aggregate": the Gaussian fitted
        to the training codes, see `sample_latents`), by sampling tokens at `temperature` (temperature=0 decodes
        greedily). Further keyword arguments go to `SentenceMIMModel.decode` (e.g. no_repeat_ngram_size=3)."""
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
            raise ValueError(f"n={n!r}: must be an integer >= 1")
        for name, value in (("temperature", temperature), ("latent_temperature", latent_temperature)):
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value < math.inf:
                raise ValueError(f"{name}={value!r}: must be a finite number >= 0")
        generator = torch.Generator(device=self.device)
        if seed is None:  # fresh randomness each call, without re-seeding torch's global generator (torch.seed())
            seed = int.from_bytes(os.urandom(8), "little") >> 1
        generator.manual_seed(seed)
        z = self.sample_latents(n, prior, latent_temperature, generator)
        if temperature == 0:
            return self.decode(z, **decode_kwargs)
        return self.decode(z, do_sample=True, temperature=temperature, generator=generator, **decode_kwargs)
