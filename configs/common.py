"""What every config has (the keys scripts rely on), with audiocraft's MusicGen recipe
(its `solver/musicgen/default.yaml`) as defaults."""

import ml_collections


def base_config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.data_dir = ""  # a dataset of `python -m musicgen_jax.data.prepare` (required)
    config.text_encoder = "t5-base"  # T5 checkpoint (hub id or path; a MusicGen checkpoint works too)
    config.init_from = ""  # fine-tune: start from this checkpoint's LM (hub id, PyTorch or converted directory, run)
    config.text_embeddings = False  # use the T5 states stored by `prepare --text-encoder` instead of running T5
    config.total_steps = 1_000_000
    config.batch_size = 192  # global, over all processes
    config.frames = 1500  # 30 s crops at 50 Hz
    config.text_length = 128  # T5 tokens per text (every process pads to it; longer texts keep their first ones)
    config.seed = 0
    config.data_parts = 0  # pipeline parts the global batch is drawn from (0: one per process, fixed at the start)
    config.log_every = 100
    config.checkpoint_every = 1000
    config.eval_every = 0  # 0: no evaluation
    config.keep_checkpoints = 3
    config.generate_every = 0  # 0: no samples; else the EMA weights' samples every so many steps (WORKDIR/samples/)
    config.sample_prompts = (
        "lofi hip hop beat with a mellow piano",
        "energetic rock song with electric guitars",
        "calm ambient pads with soft strings",
    )
    config.sample_seconds = 10.0
    config.sample_seed = 0
    config.sample_dtype = "auto"  # the LM's dtype for samples: auto (bfloat16 on GPU / TPU, float32 on CPU) or a name
    config.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 1, "tensor": 1})  # -1: the remaining devices
    config.compute_dtype = "bfloat16"  # the LM's compute dtype over float32 weights (GPU / TPU); "float32" on CPU
    config.lora_rank = 0  # > 0: fine-tune low-rank adapters of the layers' kernels only (merged when loaded)
    config.lora_text_projection = False  # with adapters: the text projection trains too
    config.scan_layers = False  # the layers as one `lax.scan` (less to compile; rematerializes on every backend)
    config.remat = "none"  # rematerialize each layer in the backward pass: "none" | "full" | "dots"
    config.model = ml_collections.ConfigDict({"dim": 1024, "num_heads": 16, "num_layers": 24, "ffn_dim": 4096})
    config.optim = ml_collections.ConfigDict(
        {"lr": 1e-4, "b1": 0.9, "b2": 0.95, "eps": 1e-8, "weight_decay": 0.1, "warmup_steps": 4000, "max_norm": 1.0}
    )
    config.cfg_dropout = 0.3  # classifier-free guidance dropout: the whole batch gets the null text
    config.word_dropout = 0.3  # T5 word dropout: each word of a training text dropped with this probability
    config.melody = False  # a melody model: conditioned on the chroma of each crop (a dataset of `prepare --chroma`)
    config.melody_dropout = 0.0  # melody models: the whole batch gets the null melody with this probability
    config.text = ml_collections.ConfigDict({"merge_text_p": 0.25, "drop_desc_p": 0.5, "drop_other_p": 0.5})
    config.ema = ml_collections.ConfigDict({"decay": 0.99, "every": 10})
    return config
