from models.mc_dropout import mc_dropout_copy
from models.unet import UNet

__all__ = ["UNet", "mc_dropout_copy"]
