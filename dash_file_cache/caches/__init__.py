"""Cache backends: where registered files live until they are served."""

from .base import CacheAbstract
from .file import CacheFile
from .memory import CachePlain
from .queue import CacheQueue

__all__ = ["CacheAbstract", "CacheFile", "CachePlain", "CacheQueue"]
