"""Readers for clean sources (CIFAR pickles, ImageFolder trees) and writers for the official -C layouts."""

from .sources import CifarSource, ImageFolderSource, SourceImageError, open_source

__all__ = ["CifarSource", "ImageFolderSource", "SourceImageError", "open_source"]
