"""The authors' released MambaDiffusion weights (`WenliangDu/MambaDiffusion`) brought into mdseg.

`backbone.py` and `head.py` map the release's key names to ours and read the model config from tensor shapes;
`convert.py` turns a whole release state dict into ours with a report of every tensor; `importer.py` reads the
released `.pth` safely and writes an mdseg checkpoint (`mdseg.checkpoint`'s format) that `predict` can use.
"""

from mdseg.release.backbone import BackboneImport, infer_backbone_config, map_backbone_state_dict
from mdseg.release.convert import ConversionReport, convert_release_state_dict
from mdseg.release.head import map_head_keys
from mdseg.release.importer import ImportResult, import_release_checkpoint

__all__ = [
    "BackboneImport",
    "ConversionReport",
    "ImportResult",
    "convert_release_state_dict",
    "import_release_checkpoint",
    "infer_backbone_config",
    "map_backbone_state_dict",
    "map_head_keys",
]
