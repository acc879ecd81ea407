"""musicgen-small over Descript's DAC 44.1 kHz tokens, as audiocraft trains one (`compression_model_checkpoint=
//pretrained/dac_44khz transformer_lm.n_q=9 transformer_lm.card=1024 'codebooks_pattern.delay.delays=[0,1,2,3,4,
5,6,7,8]'`): 9 codebooks of 1024, one step of delay each, 30 s crops (2584 frames at 44100 / 512 per second).

python -m musicgen_jax.data.prepare --codec dac_44khz --audio AUDIO --out DATA_DIR
python train.py --config configs/musicgen_small_dac.py --workdir runs/dac --config.data_dir=DATA_DIR
"""

from configs import musicgen_small


def get_config():
    config = musicgen_small.get_config()
    config.codebooks.update(n_q=9, card=1024, delays=tuple(range(9)))
    config.frames = 2584
    return config
