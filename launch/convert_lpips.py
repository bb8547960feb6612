"""Convert the LPIPS-VGG weights (torchvision VGG16 + the lpips v0.1 linear layers) to the .npz
that dctjax loads.

    python launch/convert_lpips.py --vgg=vgg16-397923af.pth --lin=vgg.pth --out=lpips_vgg.npz

--vgg: https://download.pytorch.org/models/vgg16-397923af.pth (torchvision's ImageNet VGG16);
--lin: https://github.com/richzhang/PerceptualSimilarity/raw/master/lpips/weights/v0.1/vgg.pth
(also lpips/weights/v0.1/vgg.pth inside the `lpips` pip package). Both are read without torch;
the VGG16 convs up to relu5_3 (OIHW -> HWIO) and the 5 lin layers are kept, the classifier is
dropped, and the .npz is written atomically. Pass the result as --lpips_weights=PATH.
"""

from absl import app, flags

from dctjax.eval.inception import flatten_params, num_parameters
from dctjax.eval.inception_weights import read_torch_checkpoint
from dctjax.eval.lpips import convert_state_dicts, save_lpips_params

flags.DEFINE_string(
    "vgg", None, "torchvision VGG16 weight file (vgg16-397923af.pth).", required=True
)
flags.DEFINE_string("lin", None, "lpips v0.1 linear layers for VGG (vgg.pth).", required=True)
flags.DEFINE_string("out", None, "Output .npz path.", required=True)
FLAGS = flags.FLAGS


def main(argv):
    del argv
    vgg_sd = read_torch_checkpoint(FLAGS.vgg)
    lin_sd = read_torch_checkpoint(FLAGS.lin)
    params = convert_state_dicts(vgg_sd, lin_sd)
    save_lpips_params(params, FLAGS.out)
    read = sum(v.size for v in vgg_sd.values()) + sum(v.size for v in lin_sd.values())
    print(
        f"{FLAGS.vgg} + {FLAGS.lin}: {len(vgg_sd) + len(lin_sd)} tensors ({read:,} values) -> "
        f"{FLAGS.out}: {len(flatten_params(params))} arrays, {num_parameters(params):,} parameters "
        "(VGG16 classifier dropped)"
    )


if __name__ == "__main__":
    app.run(main)
