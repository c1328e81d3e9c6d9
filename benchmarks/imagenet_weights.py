"""Evidence that the offline ImageNet weights are ImageNet weights: timm's mobilenetv2_100 with the
cached file (``python -m segnas.offline_weights install``) classifies matplotlib's photo of Grace
Hopper in uniform. ImageNet preprocessing: resize the shorter side to 256, centre crop 224,
mean/std; once with torchvision's interpolation for this file (bilinear), once with timm's
(bicubic). Prints one JSON line per interpolation with the top 5 classes and probabilities.

    python benchmarks/imagenet_weights.py
"""

from __future__ import annotations

import json

import segnas  # noqa: F401  (first: sets OpenMP wait policy before torch loads)

# isort: split
import timm
import torch
import torchvision
from matplotlib import cbook
from PIL import Image
from torchvision import transforms

from segnas.offline_weights import imagenet_file

NAME = "mobilenetv2_100"


def main() -> None:
    model = timm.create_model(NAME, pretrained=False).eval()
    model.load_state_dict(torch.load(imagenet_file(NAME), map_location="cpu", weights_only=True))
    categories = torchvision.models.MobileNet_V2_Weights.IMAGENET1K_V1.meta["categories"]
    image = Image.open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)).convert("RGB")
    for mode in (transforms.InterpolationMode.BILINEAR, transforms.InterpolationMode.BICUBIC):
        prepare = transforms.Compose(
            [
                transforms.Resize(256, interpolation=mode),
                transforms.CenterCrop(224),
                transforms.ToTensor(),
                transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
            ]
        )
        with torch.no_grad():
            probabilities = model(prepare(image)[None]).softmax(1)[0]
        top = probabilities.topk(5)
        classes = [
            {"class": int(k), "name": categories[k], "p": round(float(p), 3)} for p, k in zip(top.values, top.indices)
        ]
        print(json.dumps({"weights": str(imagenet_file(NAME)), "interpolation": mode.value, "top5": classes}))


if __name__ == "__main__":
    main()
