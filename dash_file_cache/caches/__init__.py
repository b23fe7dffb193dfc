"""Cache backends: where registered files live until they are served."""

from .base import Bounds, CacheAbstract
from .file import CacheFile
from .memory import CachePlain
from .queue import CacheQueue
from .redis import CacheRedis

__all__ = ["Bounds", "CacheAbstract", "CacheFile", "CachePlain", "CacheQueue", "CacheRedis"]
