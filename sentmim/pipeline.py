"""SentenceMIMPipeline: the text-level API (sentences in, vectors or sentences out), a `transformers.Pipeline`.

    pipe = SentenceMIMPipeline.from_pretrained("path/to/model")   # model + the tokenizer saved beside it
    pipe(["a sentence"])                   # [{"reconstruction_text": ...}]: calling the pipeline reconstructs
    pipe(["a sentence"], num_beams=4, batch_size=64)   # any reconstruct / SentenceMIMModel.decode option
    pipe.encode(["a sentence"])            # posterior means, [N, latent]
    pipe.decode(z)                         # greedy by default; any `SentenceMIMModel.decode` option
    pipe.reconstruct(["a sentence"])       # decode(encode(x)); also from a posterior sample or a perturbed mean
    pipe.interpolate("first", "second", steps=8)   # steps + 2 sentences, endpoints included
    pipe.sample(n=10, temperature=1.0)     # z from the prior N(0, I)
    pipe.sample(n=10, prior="aggregate")   # z from the aggregate posterior fitted after training (what works for
                                           # sMIM, whose codes sit near the origin where N(0, I) samples never go)

docs/architecture.md ("The text-level API") describes how it runs as a transformers Pipeline, and docs/errors.md
what `transformers.pipeline("sentence-reconstruction", model=folder)` may run from a folder you did not write.
"""

import inspect
import logging
import math
import numbers
import os
from pathlib import Path

import torch
from transformers import Pipeline

from . import gaussian
from .aggregate_posterior import AGGREGATE_POSTERIOR_FILE, AggregatePosterior
from .batching import collate_batch
from .evaluation import max_sentence_length
from .generation import decode_latents
from .model_folder import load_model
from .modeling import SentenceMIMModel
from .preprocessing import truncate_keeping_eos
from .tokenization import decode_keep_unknown, load_tokenizer

logger = logging.getLogger(__name__)

TASK = "sentence-reconstruction"  # the name transformers.pipeline(...) knows it by after `import sentmim`
# Keyword arguments of SentenceMIMModel.decode (max_length and the decoding options), accepted by a pipeline call.
DECODE_OPTIONS = frozenset(inspect.signature(decode_latents).parameters) - {"model", "z"}


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


def model_folder_of(model: SentenceMIMModel) -> Path:
    """The folder `model` was loaded from, where its tokenizer is saved too."""
    folder = model.config.name_or_path
    if not folder or not Path(folder).is_dir():
        raise ValueError(
            "SentenceMIMPipeline: no tokenizer given and the model was not loaded from a folder to read one from: "
            "pass tokenizer=, or load with SentenceMIMPipeline.from_pretrained(folder)"
        )
    return Path(folder)


def reconstruction_latents(mean: torch.Tensor, logvar: torch.Tensor, mode: str = "mean",
                           noise: float = 0.1) -> torch.Tensor:
    """The codes a reconstruction decodes: the posterior mean (mode="mean"), a draw z ~ q(z|x) ("sample"), or the mean
    plus isotropic Gaussian noise of standard deviation `noise` ("perturb", to probe the latent neighbourhood)."""
    if mode == "mean":
        return mean
    if mode == "sample":
        return gaussian.sample(mean, logvar)
    if mode == "perturb":
        return mean + noise * torch.randn_like(mean)
    raise ValueError(f"mode={mode!r}: must be one of mean, sample, perturb")


class SentenceMIMPipeline(Pipeline):
    """The text-level API of a sentmim model; as a `transformers.Pipeline`, calling it reconstructs sentences.

    `tokenizer` may be omitted when the model was loaded from a folder (as `transformers.pipeline` does): the tokenizer
    and, when there is one, the aggregate posterior are then read from that folder with sentmim's own loaders.
    `batch_size` applies to every method and is the default of a call; `device` None keeps the model where it is."""

    # transformers.pipeline(...) would otherwise load these with the Auto classes, which offer to run code that an
    # auto_map in the folder's tokenizer_config.json names; __init__ reads the tokenizer with load_tokenizer instead.
    _load_tokenizer = False
    _load_processor = False
    _load_image_processor = False
    _load_video_processor = False
    _load_feature_extractor = False

    def __init__(self, model: SentenceMIMModel, tokenizer=None, batch_size: int = 256, max_length: int | None = None,
                 aggregate_posterior: AggregatePosterior | None = None, device: str | int | torch.device | None = None,
                 task: str = TASK, **kwargs):
        self.source = None  # the folder it was loaded from, for messages
        if tokenizer is None:
            self.source = model_folder_of(model)
            tokenizer = load_tokenizer(self.source)
            if aggregate_posterior is None and (self.source / AGGREGATE_POSTERIOR_FILE).is_file():
                aggregate_posterior = AggregatePosterior.load(self.source, model.config.latent_size)
        elif isinstance(tokenizer, str | os.PathLike):  # transformers.pipeline(..., tokenizer=folder)
            tokenizer = load_tokenizer(tokenizer)
        tokenizer.padding_side = "right"
        self.batch_size = batch_size
        self.max_length = max_length or max_sentence_length(model.config, tokenizer)
        self.aggregate_posterior = aggregate_posterior
        super().__init__(model.eval(), tokenizer, task=task, device=model.device if device is None else device,
                         batch_size=batch_size, **kwargs)

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | torch.device | None = None, **kwargs):
        """Model and tokenizer saved in `path`, and the aggregate posterior when the folder has one (training fits
        it); never runs code from the folder (sentmim.model_folder)."""
        return cls(load_model(path), device=device, **kwargs)

    def save_pretrained(self, path: str | Path) -> None:
        """Model, tokenizer and (when there is one) the aggregate posterior, in one folder. Never Pipeline's own,
        which would copy this module into the folder as custom code for transformers to run."""
        self.model.save_pretrained(path)
        self.tokenizer.save_pretrained(path)
        if self.aggregate_posterior is not None:
            self.aggregate_posterior.save(path)

    # -- the transformers.Pipeline call: sentences -> reconstructions ---------------------------------------------

    def __call__(self, sentences, **options):
        """Reconstructions: `pipe("a sentence")` gives {"reconstruction_text": ...}, a list gives a list of them in
        order (a generator or a dataset, an iterator). Options: mode and noise as in `reconstruct`, any
        `SentenceMIMModel.decode` option (num_beams, do_sample, temperature, ...), and transformers' batch_size and
        num_workers."""
        if isinstance(sentences, list) and not sentences:
            return []  # transformers' Pipeline.__call__ looks at the first item
        return super().__call__(sentences, **options)

    def _sanitize_parameters(self, mode: str | None = None, noise: float | None = None, **decode_options):
        unknown = sorted(set(decode_options) - DECODE_OPTIONS)
        if unknown:
            raise TypeError(f"{TASK}: unknown option(s) {', '.join(unknown)}: pass mode, noise or options of "
                            f"SentenceMIMModel.decode ({', '.join(sorted(DECODE_OPTIONS))})")
        given = {name: value for name, value in (("mode", mode), ("noise", noise)) if value is not None}
        return {}, {**decode_options, **given}, {}

    def preprocess(self, sentence: str) -> dict[str, torch.Tensor]:
        if not isinstance(sentence, str):
            raise TypeError(f"a {type(sentence).__name__} was given, not a string: pass sentences as text")
        (ids,), truncated = self._token_ids([sentence])
        batch = collate_batch([{"input_ids": ids}], self.tokenizer.pad_token_id)
        return {**batch, "truncated": torch.tensor([truncated])}  # _forward warns with the count of its batch

    def _forward(self, batch: dict[str, torch.Tensor], mode: str = "mean", noise: float = 0.1,
                 **decode_options) -> dict[str, torch.Tensor]:
        self._warn_truncated(int(batch["truncated"].sum()), batch["truncated"].numel())
        mean, logvar = self.model.encode(batch["input_ids"], batch["attention_mask"])
        return {"output_ids": self._decode_ids(reconstruction_latents(mean, logvar, mode, noise), **decode_options)}

    def postprocess(self, outputs: dict[str, torch.Tensor]) -> dict[str, str]:
        return {"reconstruction_text": self._to_text(outputs["output_ids"])[0]}

    # -- sentences <-> token ids -------------------------------------------------------------------------------

    def _token_ids(self, sentences: list[str]) -> tuple[list[list[int]], int]:
        """Each sentence's ids (BOS ... EOS) cut to max_length keeping its EOS, and how many sentences were cut."""
        encoded = self.tokenizer(list(sentences), add_special_tokens=True, verbose=False)["input_ids"]
        eos = self.tokenizer.eos_token_id
        truncated = sum(len(ids) > self.max_length for ids in encoded)
        return [truncate_keeping_eos(ids, self.max_length, eos) for ids in encoded], truncated

    def _warn_truncated(self, truncated: int, total: int) -> None:
        if truncated:
            logger.warning("%d of %d sentences exceed %d tokens and were truncated", truncated, total, self.max_length)

    def _tokenize(self, sentences: list[str]) -> dict[str, torch.Tensor]:
        ids, truncated = self._token_ids(sentences)
        self._warn_truncated(truncated, len(ids))
        batch = collate_batch([{"input_ids": row} for row in ids], self.tokenizer.pad_token_id)
        return {name: tensor.to(self.device) for name, tensor in batch.items()}

    def _decode_ids(self, z: torch.Tensor, **decode_options) -> torch.Tensor:
        decode_options.setdefault("max_length", self.max_length - 1)  # BOS is given, never generated
        return self.model.decode(z, **decode_options)

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
        posteriors = [self.model.encode(**self._tokenize(sentences[start : start + self.batch_size]))
                      for start in range(0, len(sentences), self.batch_size)]
        if not posteriors:
            empty = torch.empty(0, self.model.config.latent_size, device=self.device)
            return empty, empty.clone()
        means, logvars = zip(*posteriors, strict=True)
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
        texts = []
        for start in range(0, z.size(0), self.batch_size):
            texts += self._to_text(self._decode_ids(z[start : start + self.batch_size], **decode_kwargs))
        return texts

    def reconstruct(self, sentences: list[str], mode: str = "mean", noise: float = 0.1, **decode_kwargs) -> list[str]:
        """decode(encode(x)), from the codes `reconstruction_latents` gives for `mode` (mean, sample, perturb)."""
        mean, logvar = self.encode_posterior(sentences)
        return self.decode(reconstruction_latents(mean, logvar, mode, noise), **decode_kwargs)

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
