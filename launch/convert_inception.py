"""Convert pytorch-fid's FID Inception weights (.pth) to the .npz that dctjax loads.

    python launch/convert_inception.py --in=pt_inception-2015-12-05-6726825d.pth \
        --out=inception_fid.npz

Reads the torch.save file without torch (zip or legacy format), maps the torchvision module names
to dctjax's parameter tree (conv OIHW -> HWIO, BatchNorm kept as scale/bias/mean/var) and writes
the .npz atomically. Pass the result (or the .pth itself) as --inception_weights=PATH.
"""

from absl import app, flags

from dctjax.eval.inception import flatten_params, num_parameters
from dctjax.eval.inception_weights import convert_state_dict, read_torch_checkpoint, save_params

flags.DEFINE_string("in", None, "pytorch-fid weight file (.pth).", required=True)
flags.DEFINE_string("out", None, "Output .npz path.", required=True)
FLAGS = flags.FLAGS


def main(argv):
    del argv
    src, dst = FLAGS["in"].value, FLAGS.out
    state_dict = read_torch_checkpoint(src)
    params = convert_state_dict(state_dict)
    save_params(params, dst)
    read = sum(v.size for v in state_dict.values())
    print(
        f"{src}: {len(state_dict)} tensors ({read:,} values) -> {dst}: "
        f"{len(flatten_params(params))} arrays, {num_parameters(params):,} parameters "
        "(fc, AuxLogits and num_batches_tracked dropped)"
    )


if __name__ == "__main__":
    app.run(main)
