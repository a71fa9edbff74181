"""What the API answers when a request cannot be served: a status and a one-line message.

Every error the API returns is JSON ``{"error": MESSAGE}`` with the status below
(docs/SERVE.md, "Errors").
"""

from __future__ import annotations

from simclr_watches.core.errors import ImageReadError, ImageTooLargeError, NotAnImageError, one_line


class ApiError(Exception):
    """A request the API refuses; ``status`` is its HTTP status code.

    Attributes:
        status: 400 bad request, 401 no or wrong token, 403 writes disabled, 404 unknown item,
            413 too large, 415 not an image, 422 bad parameter, 503 busy, 507 feedback full.
        message: one line saying what is wrong.
    """

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = one_line(message)


def image_error(e: ImageReadError) -> ApiError:
    """An undecodable photo as an API error: not an image 415, too many pixels 413, anything else 400."""
    status = 415 if isinstance(e, NotAnImageError) else 413 if isinstance(e, ImageTooLargeError) else 400
    return ApiError(status, str(e))
