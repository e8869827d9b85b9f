# Frames on the wire (docs/PROTOCOL.md section 2): a 4-byte big-endian length, then that
# many bytes of msgpack.  Every received byte passes through here, so it is C.


class FrameTooLarge(EsscError):
    def __init__(self, size, limit):
        super().__init__(f"frame of {size} bytes exceeds the limit of {limit}")
        self.size = size
        self.limit = limit


cdef class FrameDecoder:
    """Turns the byte stream of one connection into frame payloads.

    ``feed(data)`` returns the payloads completed by ``data`` (bytes objects, possibly
    none) and keeps any partial frame for the next call; it raises FrameTooLarge as
    soon as a header announces more than ``max_frame`` bytes, as the stream cannot be
    resynchronised after that.
    """

    def __cinit__(self, size_t max_frame=1 << 20):
        self.max_frame = max_frame

    def __dealloc__(self):
        free(self.buf)

    @property
    def pending(self):
        """Bytes received that do not yet form a complete frame."""
        return self.used

    cdef int _keep(self, const uint8_t *p, size_t n) except -1:
        cdef size_t cap = self.cap
        if self.used + n > cap:
            cap = max(<size_t>256, 2 * cap, self.used + n)
            self.buf = <uint8_t *>_grow(self.buf, cap)
            self.cap = cap
        memcpy(self.buf + self.used, p, n)
        self.used += n
        return 0

    def feed(self, const uint8_t[::1] data not None):
        cdef list out = []
        cdef const uint8_t *p
        cdef size_t n = data.shape[0], pos = 0, size, need
        if n == 0:
            return out
        if self.used:
            # Complete the carried-over frame first, from the new data.
            if self.used < 4:
                need = min(4 - self.used, n)
                self._keep(&data[0], need)
                pos = need
                if self.used < 4:
                    return out
            size = _be32(self.buf)
            if size > self.max_frame:
                raise FrameTooLarge(size, self.max_frame)
            need = min(4 + size - self.used, n - pos)
            if need:
                self._keep(&data[pos], need)
                pos += need
            if self.used < 4 + size:
                return out
            out.append(PyBytes_FromStringAndSize(<const char *>self.buf + 4, size))
            self.used = 0
        p = &data[0]
        while n - pos >= 4:
            size = _be32(p + pos)
            if size > self.max_frame:
                raise FrameTooLarge(size, self.max_frame)
            if n - pos - 4 < size:
                break
            out.append(PyBytes_FromStringAndSize(<const char *>p + pos + 4, size))
            pos += 4 + size
        if pos < n:
            self._keep(p + pos, n - pos)
        return out


cdef inline size_t _be32(const uint8_t *p) noexcept:
    return (<size_t>p[0] << 24) | (<size_t>p[1] << 16) | (<size_t>p[2] << 8) | p[3]
