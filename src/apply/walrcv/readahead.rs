//! Read-ahead of the replication stream: the worker takes every complete
//! CopyData message libpq holds, and what the socket has, into a bounded
//! queue of its own, and applies from the queue.
//!
//! Design notes
//! - Why (issue 14, docs/BENCHMARKS.md "bulk"): without streaming, the
//!   publisher's walsender decodes a large transaction whole before it
//!   sends its first change, and it starts decoding the next one only once
//!   it has handed the last bytes of the previous one to its socket. Reading
//!   one message at a time (`libpqrcv_receive` reads the socket only when
//!   libpq holds no complete message), the worker leaves the previous
//!   transaction in the kernel's socket buffers until it has applied nearly
//!   all of it; the walsender then decodes the next one while the worker
//!   waits with nothing to do — 0.5–0.7 s per bulk run, and a faster worker
//!   waits longer. Taking the stream off the socket as it arrives lets the
//!   walsender finish sending, and start decoding the next transaction,
//!   while the worker still applies the previous one.
//! - Only while the messages are large (≥ [`LARGE_MESSAGE`]: the batched
//!   rows of a large transaction, plugin option `batch`, `worker.rs`
//!   `Wire`). A walsender writes each message with its own `send` whenever
//!   its socket can take it. Read as `libpqrcv_receive` reads (the socket
//!   once, when nothing complete is buffered), the receive window stays
//!   nearly closed under a backlog and the walsender's messages leave in
//!   large segments anyway; drained as they arrive, a stream of one change
//!   per message cost the worker ~10% and its walsender ~65% more CPU, one
//!   segment per change (docs/BENCHMARKS.md). Messages of ~64 kB make large
//!   segments whoever reads when. So the socket is drained, and looked at
//!   again while the queue is not empty, only after a large message; after
//!   small ones it is read exactly as before. A worker streaming single
//!   documents (an older publisher) does not use this module.
//! - Bounded: the queue stops reading at [`READ_AHEAD_BYTES`] of queued
//!   messages (the kernel's buffers and the walsender then wait, as
//!   before), so the worker's memory does not grow with the stream.
//! - Cheap: the socket is looked at when the queue is empty, and otherwise
//!   once per [`REFILL_EVERY`] bytes taken from the queue — a `recv` that
//!   finds nothing costs a system call, which per message would cost more
//!   than it saves. Each message is copied into the queue's blocks
//!   ([`BLOCK`] bytes, one spare kept) and libpq's allocation of it is freed
//!   at once: thousands of small allocations kept alive cost `malloc` more
//!   (its per-thread cache is for the few most recently freed) than the
//!   copy of a few hundred bytes does.
//! - Nothing changes for the rest of the worker: it sees the same messages
//!   in the same order, one at a time; "received" still means taken from
//!   here (feedback never reports what is only queued), and "nothing to
//!   read" (a deferred group's commit, a ping) still means the queue, libpq
//!   and the socket are all empty. The end of the COPY and a failure met
//!   while reading ahead come after the queued messages, as they did after
//!   libpq's buffered ones: everything received before a lost connection is
//!   still applied.
//! - A session's queue is dropped with its connection; the next session
//!   receives those messages again from the origin's progress (nothing
//!   queued was ever confirmed).

use std::collections::VecDeque;

/// Queued bytes beyond which nothing more is read.
pub(crate) const READ_AHEAD_BYTES: usize = 16 << 20;

/// Bytes taken from a non-empty queue between two looks at the socket.
const REFILL_EVERY: usize = 64 << 10;

/// Messages from this size on make the read-ahead drain the socket.
const LARGE_MESSAGE: usize = 16 << 10;

/// Size of the queue's blocks (a larger message gets a block of its own).
const BLOCK: usize = 1 << 20;

/// One read from the connection.
pub(super) enum Pull<C> {
    Data(C),
    /// Nothing complete is buffered.
    Nothing,
    End,
    Failed(String),
}

/// Where the messages come from (libpq, or a test's script).
pub(super) trait Source {
    type Chunk: AsRef<[u8]>;
    /// The next complete message already read from the socket.
    fn take(&mut self) -> Pull<Self::Chunk>;
    /// Read what the socket has, without waiting.
    fn read_socket(&mut self) -> Result<(), String>;
}

/// What [`ReadAhead::next`] hands out.
pub(super) enum Next<'a> {
    Data(&'a [u8]),
    /// Queue, libpq and socket are empty: wait for the socket.
    Nothing,
    End,
    Failed(String),
}

/// How the stream after the queued messages ends, once met.
enum Tail {
    End,
    Failed(String),
}

/// Messages laid end to end in blocks, in arrival order.
#[derive(Default)]
struct Queue {
    /// Each block's `len` is what was written; its capacity is never
    /// exceeded (a slice handed out stays where it is).
    blocks: VecDeque<Vec<u8>>,
    /// (block number, start, length) of each queued message.
    messages: VecDeque<(u64, usize, usize)>,
    /// The number of `blocks[0]`.
    first: u64,
    spare: Option<Vec<u8>>,
    bytes: usize,
}

impl Queue {
    fn push(&mut self, m: &[u8]) {
        let fits = self.blocks.back().is_some_and(|b| b.capacity() - b.len() >= m.len());
        if !fits {
            let block = match self.spare.take() {
                Some(b) if m.len() <= b.capacity() => b,
                _ => Vec::with_capacity(m.len().max(BLOCK)),
            };
            self.blocks.push_back(block);
        }
        let number = self.first + self.blocks.len() as u64 - 1;
        let block = self.blocks.back_mut().expect("pushed above");
        self.messages.push_back((number, block.len(), m.len()));
        block.extend_from_slice(m);
        self.bytes += m.len();
    }

    /// The oldest message; the blocks before its own are recycled.
    fn pop(&mut self) -> Option<&[u8]> {
        let (number, start, len) = self.messages.pop_front()?;
        while self.first < number {
            let mut done = self.blocks.pop_front().expect("a message's block is queued");
            self.first += 1;
            if done.capacity() == BLOCK {
                done.clear();
                self.spare = Some(done);
            }
        }
        self.bytes -= len;
        Some(&self.blocks[0][start..start + len])
    }

    fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }
}

pub(super) struct ReadAhead {
    queue: Queue,
    taken_since_read: usize,
    tail: Option<Tail>,
    limit: usize,
    /// The last message queued was large: read ahead (see the notes).
    large: bool,
}

impl ReadAhead {
    pub(super) fn new(limit: usize) -> ReadAhead {
        ReadAhead { queue: Queue::default(), taken_since_read: 0, tail: None, limit, large: false }
    }

    /// The next message, reading ahead as the notes say.
    pub(super) fn next<S: Source>(&mut self, src: &mut S) -> Next<'_> {
        if self.queue.is_empty() || (self.large && self.taken_since_read >= REFILL_EVERY) {
            self.fill(src);
        }
        if let Some(m) = self.queue.pop() {
            self.taken_since_read += m.len();
            return Next::Data(m);
        }
        match self.tail.take() {
            Some(Tail::End) => Next::End,
            Some(Tail::Failed(m)) => Next::Failed(m),
            None => Next::Nothing,
        }
    }

    /// Queue what libpq holds, then what the socket has, until the bound,
    /// a round that brings nothing new, or the end of the stream.
    fn fill<S: Source>(&mut self, src: &mut S) {
        self.taken_since_read = 0;
        if self.tail.is_some() {
            return;
        }
        let mut first = true;
        loop {
            let mut got = false;
            while self.queue.bytes < self.limit {
                match src.take() {
                    Pull::Data(c) => {
                        self.queue.push(c.as_ref());
                        self.large = c.as_ref().len() >= LARGE_MESSAGE;
                        got = true;
                    }
                    Pull::Nothing => break,
                    Pull::End => {
                        self.tail = Some(Tail::End);
                        return;
                    }
                    Pull::Failed(m) => {
                        self.tail = Some(Tail::Failed(m));
                        return;
                    }
                }
            }
            // After small messages: the socket once, only when nothing
            // complete was buffered (as libpqrcv_receive reads).
            if self.queue.bytes >= self.limit || (!got && !first) || (got && !self.large) {
                return;
            }
            first = false;
            if let Err(m) = src.read_socket() {
                self.tail = Some(Tail::Failed(m));
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scripted connection: `socket` holds what each read brings.
    struct Script {
        buffered: VecDeque<Pull<Vec<u8>>>,
        socket: VecDeque<Vec<Pull<Vec<u8>>>>,
        reads: usize,
        fail_read: Option<String>,
    }

    impl Script {
        fn new(buffered: Vec<Pull<Vec<u8>>>, socket: Vec<Vec<Pull<Vec<u8>>>>) -> Script {
            Script { buffered: buffered.into(), socket: socket.into(), reads: 0, fail_read: None }
        }
    }

    impl Source for Script {
        type Chunk = Vec<u8>;
        fn take(&mut self) -> Pull<Vec<u8>> {
            self.buffered.pop_front().unwrap_or(Pull::Nothing)
        }
        fn read_socket(&mut self) -> Result<(), String> {
            self.reads += 1;
            if let Some(m) = self.fail_read.take() {
                return Err(m);
            }
            if let Some(batch) = self.socket.pop_front() {
                self.buffered.extend(batch);
            }
            Ok(())
        }
    }

    fn msg(n: u8, len: usize) -> Pull<Vec<u8>> {
        Pull::Data(vec![n; len])
    }

    fn data(r: &mut ReadAhead, s: &mut Script) -> Option<u8> {
        match r.next(s) {
            Next::Data(d) => Some(d[0]),
            _ => None,
        }
    }

    #[test]
    fn same_messages_in_order_then_nothing() {
        let big = LARGE_MESSAGE;
        let mut s = Script::new(vec![msg(1, big)], vec![vec![msg(2, big), msg(3, 10)], vec![msg(4, 10)]]);
        let mut r = ReadAhead::new(1 << 20);
        let got: Vec<u8> = std::iter::from_fn(|| data(&mut r, &mut s)).collect();
        assert_eq!(got, [1, 2, 3, 4]);
        assert!(matches!(r.next(&mut s), Next::Nothing));
    }

    #[test]
    fn drains_the_socket_while_messages_are_queued() {
        // Three socket reads' worth arrive while the first message is in
        // hand: all are queued at the first fill, up to the bound.
        let big = LARGE_MESSAGE;
        let mut s = Script::new(vec![], vec![vec![msg(1, big)], vec![msg(2, big)], vec![msg(3, big)]]);
        let mut r = ReadAhead::new(1 << 20);
        assert_eq!(data(&mut r, &mut s), Some(1));
        assert_eq!(r.queue.messages.len(), 2, "the socket was read ahead");
        assert!(s.socket.is_empty());
    }

    #[test]
    fn small_messages_are_read_as_libpqrcv_receive_reads() {
        // One read of the socket, only when nothing complete is buffered.
        let mut s = Script::new(vec![msg(1, 100)], vec![vec![msg(2, 100)], vec![msg(3, 100)], vec![msg(4, 100)]]);
        let mut r = ReadAhead::new(1 << 20);
        assert_eq!(data(&mut r, &mut s), Some(1));
        assert_eq!(s.reads, 0, "a complete message was buffered: no read");
        assert_eq!(data(&mut r, &mut s), Some(2));
        assert_eq!(s.reads, 1, "one read when nothing was buffered");
        assert_eq!(data(&mut r, &mut s), Some(3));
        assert_eq!(data(&mut r, &mut s), Some(4));
        assert_eq!(s.reads, 3);
    }

    #[test]
    fn stops_at_the_bound_and_reads_again_after_refill_every() {
        let big = REFILL_EVERY / 2;
        let batches: Vec<Vec<Pull<Vec<u8>>>> = (0..10).map(|i| vec![msg(i, big)]).collect();
        let mut s = Script::new(vec![], batches);
        let mut r = ReadAhead::new(3 * big);
        assert_eq!(data(&mut r, &mut s), Some(0));
        assert_eq!(r.queue.messages.len(), 2, "three queued at the bound, one handed out");
        let reads = s.reads;
        assert_eq!(data(&mut r, &mut s), Some(1));
        assert_eq!(s.reads, reads, "no read before REFILL_EVERY bytes were taken");
        assert_eq!(data(&mut r, &mut s), Some(2));
        assert!(s.reads > reads, "a read once REFILL_EVERY bytes were taken");
        assert!(r.queue.bytes <= 3 * big);
        let rest: Vec<u8> = std::iter::from_fn(|| data(&mut r, &mut s)).collect();
        assert_eq!(rest, [3, 4, 5, 6, 7, 8, 9]);
    }

    #[test]
    fn end_and_failure_come_after_the_queued_messages() {
        let mut s = Script::new(vec![msg(1, 10), msg(2, 10), Pull::End, msg(9, 10)], vec![]);
        let mut r = ReadAhead::new(1 << 20);
        assert_eq!(data(&mut r, &mut s), Some(1));
        assert_eq!(data(&mut r, &mut s), Some(2));
        assert!(matches!(r.next(&mut s), Next::End));

        let mut s = Script::new(vec![msg(1, 10)], vec![]);
        s.fail_read = Some("server closed the connection unexpectedly".into());
        let mut r = ReadAhead::new(1 << 20);
        assert_eq!(data(&mut r, &mut s), Some(1));
        match r.next(&mut s) {
            Next::Failed(m) => assert_eq!(m, "server closed the connection unexpectedly"),
            _ => panic!("the failure is reported after the message"),
        }
    }

    #[test]
    fn blocks_keep_each_message_whole_and_are_recycled() {
        let mut q = Queue::default();
        // Messages that straddle block ends, one larger than a block.
        let sizes = [BLOCK / 3, BLOCK / 3, BLOCK / 2, 2 * BLOCK, 7, BLOCK - 7, 1];
        for (i, &n) in sizes.iter().enumerate() {
            q.push(&vec![i as u8; n]);
        }
        assert_eq!(q.bytes, sizes.iter().sum::<usize>());
        assert_eq!(q.blocks.len(), 5);
        let block_of = [0, 0, 1, 2, 3, 3, 4];
        for (i, &n) in sizes.iter().enumerate() {
            let m = q.pop().expect("queued");
            assert_eq!(m.len(), n);
            assert!(m.iter().all(|&b| b == i as u8), "message {i} intact");
            assert_eq!(q.first, block_of[i], "the blocks before message {i}'s are released");
        }
        assert_eq!(q.blocks.len(), 1);
        assert!(q.pop().is_none());
        assert_eq!(q.bytes, 0);
        assert!(q.spare.is_some(), "a block of BLOCK bytes is kept for reuse");
        q.push(b"again");
        assert_eq!(q.pop(), Some(&b"again"[..]));
    }

    #[test]
    fn an_idle_socket_is_read_once_per_call() {
        let mut s = Script::new(vec![], vec![]);
        let mut r = ReadAhead::new(1 << 20);
        assert!(matches!(r.next(&mut s), Next::Nothing));
        assert_eq!(s.reads, 1);
    }
}
