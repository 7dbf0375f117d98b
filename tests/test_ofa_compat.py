from __future__ import annotations

import subprocess
import sys


def test_ofa_imports_without_torchvision() -> None:
    code = (
        "from subnets.ofa_compat import import_ofa, install\n"
        "import_ofa()\n"
        "from ofa.imagenet_classification.elastic_nn.networks import OFAMobileNetV3\n"
        "import ofa.utils.my_dataloader.my_random_resize_crop as m\n"
        "print(install(), getattr(m, '__dynofa_standin__', False))\n"
        "try:\n"
        "    m.MyRandomResizedCrop(224)\n"
        "except RuntimeError as e:\n"
        "    print('refused:', 'torchvision' in str(e))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    try:
        import PIL.Image  # noqa: F401
        import torchvision.transforms  # noqa: F401

        vision_ok = True
    except Exception:  # noqa: BLE001
        vision_ok = False
    if vision_ok:  # the shim must do nothing where the real stack works
        assert out[:2] == ["False", "False"]
    else:
        assert out == ["True", "True", "refused:", "True"]
