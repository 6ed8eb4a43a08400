# Sends the persistent queue over an uplink, acknowledged batch by batch, with exponential
# backoff and jitter after failures.
#
# A link is any object with send(records) -> bool: records are (seq, lane, payload) tuples
# from the queue, and True means the other end stored all of them. A link that raises OSError
# counts as a failure too. The server should keep records by seq: a batch whose ack was lost
# on the way back is sent again (at-least-once), but no record is sent again once its ack
# reached the queue.


class Sync:
    """clock: a function returning ms; rand(n): an int in [0, n) for the jitter.

    After k failures in a row the next attempt waits base_ms * 2**(k-1), capped at max_ms,
    of which a random half is jitter ("equal jitter"): devices that lost the link together do
    not all retry together, yet none retries early.
    """

    def __init__(self, queue, link, clock, rand, batch=16, base_ms=2000, max_ms=600000, max_batches=64,
                 on_event=None):
        self.queue = queue
        self.link = link
        self.clock = clock
        self.rand = rand
        self.batch = batch
        self.base_ms = base_ms
        self.max_ms = max_ms
        self.max_batches = max_batches
        self.on_event = on_event
        self.failures = 0
        self.next_ms = clock()
        self.delivered = 0
        self.attempts = 0
        self.failed_attempts = 0
        self.last_ok_ms = None
        self.last_error = None

    def delay_ms(self, failures):
        d = self.base_ms
        for _ in range(failures - 1):
            d *= 2
            if d >= self.max_ms:
                d = self.max_ms
                break
        half = d // 2
        return d - half + self.rand(half + 1)

    def due(self, now=None):
        return (self.clock() if now is None else now) >= self.next_ms

    def poll(self, now=None):
        """Sends batches until the queue is empty, a send fails, or max_batches went out.
        Does nothing while backing off. Returns the number of records delivered."""
        now = self.clock() if now is None else now
        if now < self.next_ms:
            return 0
        sent = 0
        for _ in range(self.max_batches):
            records = self.queue.peek(self.batch)
            if not records:
                break
            self.attempts += 1
            try:
                ok = self.link.send(records)
                error = None if ok else "not acknowledged"
            except OSError as exc:
                ok = False
                error = "OSError %s" % (exc.args[0] if exc.args else "")
            if not ok:
                self.failures += 1
                self.failed_attempts += 1
                self.last_error = error
                wait = self.delay_ms(self.failures)
                self.next_ms = self.clock() + wait
                if self.on_event is not None and self.failures == 1:
                    self.on_event({"kind": "uplink_down", "t": self.clock(), "error": error})
                return sent
            self.queue.ack(records)
            sent += len(records)
            self.delivered += len(records)
            if self.failures and self.on_event is not None:
                self.on_event({"kind": "uplink_up", "t": self.clock(), "after_failures": self.failures})
            self.failures = 0
            self.last_ok_ms = self.clock()
        self.next_ms = self.clock()
        return sent

    def stats(self):
        return {"delivered": self.delivered, "attempts": self.attempts, "failed": self.failed_attempts,
                "failures_in_row": self.failures, "next_ms": self.next_ms, "last_error": self.last_error}
