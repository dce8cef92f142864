"""The ML config types: what data, tokenizer, model, pretraining, fine-tuning, evaluation
and the Trainer are told to do.

Plain dataclasses, so modules/ takes typed configs without knowing about Hydra: the
pipeline's schema (pipelines/config/schema.py) composes them into its root config and
registers that with Hydra, and the composed config arrives here as these instances.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")

# OmegaConf's marker for a value that must be set (by a conf/ YAML file), spelled out so this
# module needs no Hydra/OmegaConf import; composition fails while one is still unset.
MISSING: Any = "???"


@dataclass
class DataConfig:
    # Where text comes from: synthetic (built in), local_text (your corpus), local_labeled
    # (your labeled file; its texts are also the pretraining corpus) or hub (`datasets`).
    source: str = "synthetic"
    name: str = "synthetic"
    # local_text / local_labeled: a file, a glob, or a list of files/globs (cwd-relative).
    path: Any = None
    # local_text only: an optional labeled file to fine-tune on (same rules as local_labeled).
    labeled_path: Any = None
    validation_path: str | None = None  # labeled validation split; null: cut from the train file
    test_path: str | None = None  # labeled test split; null: cut from the train file
    format: str = "auto"  # auto (from the suffix) | text | jsonl | csv | tsv | parquet
    header: bool = True  # csv/tsv: first row names the columns
    text_column: Any = "text"  # a column name, or a 0-based position
    label_column: Any = "label"  # a column name, or a 0-based position
    # finetune.task=seq2seq: the input and output text columns (jsonl/csv/tsv/parquet).
    source_column: Any = "source"
    target_column: Any = "target"
    # finetune.task=token_classification reads CoNLL-style files (data.format=conll or a
    # .conll suffix): one token per line, its tag in the last column, blank line between sentences.
    encoding: str = "utf-8"
    # source=hub: any `datasets` dataset (needs network; HF_HUB_OFFLINE=1 fails at once).
    hub_path: str | None = None  # e.g. wikitext, stanfordnlp/sst2
    hub_name: str | None = None  # the dataset's config, e.g. wikitext-2-raw-v1
    revision: str | None = None  # a commit sha or tag pins the data; null: the latest
    train_split: str = "train"
    validation_split: str | None = "validation"  # null: cut deterministically from train
    test_split: str | None = "test"  # null: cut deterministically from train
    streaming: bool = False
    max_documents: int | None = None  # cap on pretraining documents read (required when streaming)
    # Splits a source does not provide are cut deterministically with `seed`.
    labeled_val_fraction: float = 0.1
    labeled_test_fraction: float = 0.2
    val_fraction: float = 0.05  # share of corpus documents held out for LM validation
    seed: int = 1234
    # source=synthetic
    num_topics: int = 4
    words_per_topic: int = 48  # topic cue words per topic (the label depends on these)
    neutral_words: int = 160  # topic-free filler vocabulary
    corpus_documents: int = 6000  # unlabeled pretraining documents (2-4 same-topic sentences each)
    labeled_train: int = 2000  # labeled pool; finetune.train_examples are sampled from it
    labeled_val: int = 400
    labeled_test: int = 1000
    cue_rate: float = 0.7  # chance that a content slot of a corpus sentence holds a cue word


@dataclass
class TokenizerConfig:
    # auto: the checkpoint's own tokenizer when model.init is not scratch; otherwise
    # the family's classic choice (BPE causal, WordPiece masked, BPE seq2seq as in BART).
    kind: str = "auto"  # auto | bpe | wordpiece | unigram | pretrained
    path: str | None = None  # kind=pretrained: a local dir or hub id; null: model.init's
    vocab_size: int = 1024
    min_frequency: int = 2


@dataclass
class ModelConfig:
    name: str = MISSING
    arch: str = MISSING  # a transformers model_type built from scratch: gpt2, bert, bart
    family: str = MISSING  # causal | masked | seq2seq
    # Where the weights come from: scratch, a local HF directory, a hub id,
    # runs:/<run_id>/hf_model, or models:/<name>/<version or alias>. Not scratch: the
    # checkpoint's own config decides the architecture and pretraining continues from it.
    init: str = "scratch"
    init_path: str | None = None  # filled in by transferlab: model.init resolved to a local dir
    trust_remote_code: bool = False
    # The shape defaults are the tiny presets' (model=gpt2_tiny, bert_tiny, bart_tiny):
    # 2 layers, 128 wide, 4 heads, 512 FFN, 128 positions.
    n_layer: int = 2  # seq2seq: encoder layers
    n_embd: int = 128
    n_head: int = 4
    n_inner: int = 512
    n_decoder_layer: int | None = None  # seq2seq only; null: same as n_layer
    max_positions: int = 128
    dropout: float = 0.1

    @property
    def from_scratch(self) -> bool:
        """Fresh weights (``init`` scratch or unset): the preset's arch and shape build the
        model; otherwise a checkpoint's own config decides (pipelines.checkpoint_refs)."""
        return (self.init or "scratch") == "scratch"


@dataclass
class PretrainConfig:
    block_size: int = 64  # tokens per packed training sequence
    batch_size: int = 32  # per device: the global batch is batch_size x devices x num_nodes
    max_steps: int = 1000
    # null: the family's default (FAMILY_LR in modules/training/learning_rates.py: 3e-3 causal/masked,
    # 1e-3 seq2seq), 1e-4 continuing a checkpoint.
    lr: float | None = None
    weight_decay: float = 0.01
    warmup_steps: int = 50
    grad_clip: float = 1.0
    val_every_n_steps: int = 200
    val_batches: int = 20  # validation batches per check (evaluate measures perplexity separately)
    mlm_probability: float = 0.15  # masked LMs only
    mask_ratio: float = 0.3  # seq2seq text infilling: share of tokens masked (BART)
    poisson_lambda: float = 3.0  # seq2seq text infilling: mean masked span length
    checkpoint_every_n_steps: int = 100  # resume granularity: a killed run restarts from here
    keep_checkpoints: int = 2  # the newest N; an unreadable newest one falls back to the next
    # Model Registry name for the final export; null: do not register.
    register_as: str | None = "${experiment_name}-${model.name}"


@dataclass
class FinetuneConfig:
    task: str = "classification"
    train_examples: int = 64  # labeled examples used for fine-tuning (stratified sample)
    # tfidf: no network, the task's classical baseline on the same labeled subset (TF-IDF +
    # logistic regression, per-word majority tag, or copy/nearest-neighbour; docs/tasks.md), so
    # a report shows what pretraining beats besides scratch. Also: zero_shot (causal LMs: prompt
    # scoring, no training), or a checkpoint (dir, hub id, runs:/, models:/). Every init trains
    # on the same labeled subset with the same hyperparameters, so the comparison is fair.
    inits: list[str] = field(default_factory=lambda: ["pretrained", "scratch", "tfidf"])
    # Tokens per example. token_classification: sub-tokens per sentence (words cut off are
    # predicted O); seq2seq: source + target together (causal), the source (encoder-decoder).
    max_length: int = 64
    batch_size: int = 16
    # true: training batches group rows of similar length (transformers' LengthGroupedSampler:
    # shuffled, sorted within mega-batches of at most a quarter of the rows), so less padding is
    # computed; false: plain shuffled batches. Validation and test always run longest-first.
    group_by_length: bool = True
    max_epochs: int = 40  # a cap: early stopping on finetune.monitor (patience) ends most runs sooner
    # full | linear_probe (frozen body, only the classification head trains) | partial (the
    # top `trainable_layers` transformer layers + head train); modules/models/freeze.py |
    # lora (frozen body, low-rank adapters on the lora_target_modules + head train; saved as
    # adapter/ and merged into hf_model/; modules/models/lora.py).
    # seq2seq knows only full and lora (the LM head is tied to the embeddings).
    strategy: str = "full"
    trainable_layers: int = 2  # strategy=partial: how many of the top transformer layers train
    # strategy=lora: the adapters' rank, their scale numerator (updates are scaled by alpha / rank),
    # dropout on their input, and the linear layers that get one: auto (by model type: gpt2 c_attn,
    # bert query+value, bart q_proj+v_proj) or a list of layer names, e.g. [c_attn,c_proj].
    lora_rank: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.1
    lora_target_modules: Any = "auto"
    # null: the strategy's default (STRATEGY_LR in modules/training/learning_rates.py; CHECKPOINT_LR when
    # model.init is a real checkpoint). Used by inits pretrained and scratch.
    lr: float | None = None
    # The LR for extra checkpoints listed in `inits` (null: CHECKPOINT_LR of the strategy).
    checkpoint_lr: float | None = None
    # Learning-rate selection on the validation split (modules/training/lr_search.py): > 0 tunes
    # every training init (pretrained, scratch, checkpoints) search_trials times, at rates spread
    # evenly in log space over [search_lr_min, search_lr_max], and keeps the trial with the best
    # best-epoch finetune.monitor (lowest val/loss by default); lr and checkpoint_lr are then
    # unused. Costs search_trials fine-tunes per init. 0: off, one fine-tune at lr (checkpoint_lr).
    search_trials: int = 0
    search_lr_min: float = 1e-5
    search_lr_max: float = 1e-2
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    # What picks the epoch that is tested (early stopping, best checkpoint) and the LR search's
    # trial: val/loss, or the task's validation accuracy (val/accuracy; token classification:
    # val/token_accuracy). Loss prefers a model that stays close to uniform predictions: a
    # scratch model can stop near chance while its accuracy is still rising (docs/tasks.md).
    monitor: str = "val/loss"
    patience: int = 6  # early stopping on finetune.monitor, in epochs
    dropout: float = 0.1
    # init=zero_shot (causal LMs): no training; each test text is classified by the LM
    # log-likelihood of each label's verbalisation after this prompt (modules/evaluation/zero_shot.py).
    zero_shot_template: str = "{text}\nLabel:"  # must contain {text}
    # One continuation per label, in label-id order; null: " <label name>" from the dataset.
    zero_shot_verbalizers: list[str] | None = None
    # true: mean instead of summed token log-prob, so multi-token labels are not penalised.
    zero_shot_normalize: bool = False
    # finetune.task=seq2seq: target tokens kept for training, and the generation budget.
    max_target_length: int = 32
    num_beams: int = 1  # 1: greedy decoding
    # Model Registry name for the best neural init's MLflow model (by the task's headline test
    # metric), registered by `transferlab run`; sweep points never register. null: do not register.
    register_as: str | None = "${experiment_name}-${finetune.task}"


@dataclass
class DistillConfig:
    # Distillation (the `distill` stage, finetune.task=classification only): a student learns
    # from a teacher's soft labels on the labeled budget plus unlabeled text; docs/tasks.md.
    # The teacher, a fine-tuned classifier: an entry of finetune.inits (that fine-tune of this
    # run, e.g. pretrained), or a fine-tuned checkpoint (local HF dir, runs:/, models:/).
    # null: no distill stage.
    teacher: str | None = None
    # pretrained: the pipeline's own pretrained model; or a model.init-style checkpoint.
    student: str = "pretrained"
    # Labeled rows: alpha * T^2 * KL(teacher/T || student/T) + (1 - alpha) * cross-entropy;
    # unlabeled rows: the KL term alone.
    alpha: float = 0.5
    temperature: float = 2.0
    # Unlabeled texts: drawn from the labeled pool outside the finetune.train_examples subset,
    # labels dropped. null: all of them; 0: the labeled budget only.
    unlabeled: int | None = None

    @property
    def enabled(self) -> bool:
        return self.teacher is not None


@dataclass
class EvaluateConfig:
    batch_size: int = 64
    perplexity_batches: int = 50  # validation batches used for the pretrained LM's perplexity
    # What using each fine-tuned model costs (modules/evaluation/inference_cost.py): test texts
    # predicted in batches (inference/examples_per_sec, ms_per_example_batched, emissions_g_per_1k)
    # and one at a time (inference/ms_per_example_batch1). 0: not measured.
    inference_examples: int = 256
    inference_batch1_examples: int = 32
    # The dtype predictions run in, for these figures and `transferlab predict`: auto (bf16 where
    # the device runs it natively), bf16 or fp32.
    inference_precision: str = "auto"


@dataclass
class TrainerConfig:
    accelerator: str = "cpu"
    devices: Any = 1
    strategy: str = "auto"  # auto | ddp | fsdp | ... (Lightning strategy names)
    num_nodes: int = 1
    # auto: bf16-mixed where the CPU runs bf16 natively (AVX512-BF16/AMX), else 32-true; on a GPU
    # bf16-mixed where it supports bf16, else 16-mixed.
    precision: str = "auto"
    num_workers: int | None = None  # DataLoader workers; null: 0 on CPU, min(4, cores - 1) on GPU
    num_threads: int | None = None  # null: torch's default (one per core)
    log_every_n_steps: int = 10  # metrics go to MLflow every N steps, never every step
    progress_every_n_steps: int = 50
    deterministic: bool = False
    peak_flops: float | None = None  # dense peak FLOP/s per device for train/mfu; null: built-in default
    # torch.compile the LM for pretraining: true, false, or auto (compile when the run trains at least
    # compile_min_steps steps, where compiling pays back its 20-40 s; modules/training/compile_policy.py).
    compile: Any = "auto"
    compile_min_steps: int | None = None  # null: the measured default for the accelerator


def required(value: T | None, key: str) -> T:
    """A value the schema allows to be null because the pipeline fills in a default when it
    composes the config (pretrain.lr, finetune.lr): by the time modules/ reads it, it is set."""
    if value is None:
        raise ValueError(f"{key} is unset; the pipeline fills in its default when it composes the config")
    return value
