//! Commands written straight into one buffer in Redis's wire format (RESP
//! arrays of bulk strings), ready to send as one pipeline.
//!
//! redis-rs's `Pipeline` keeps a `Cmd` per command (two allocations each)
//! and copies every argument twice; for a batch of a thousand DUMP + PTTL,
//! or a thousand RESTOREs carrying their payloads, that was a quarter of
//! redis-ferry's own CPU time. [`CommandBuffer`] has the same shape
//! (`buffer.cmd("DUMP").arg(key);`) and takes the same argument types
//! (anything `redis::ToRedisArgs`), but writes each argument once.

use std::io::Write;

use redis::{RedisWrite, ToRedisArgs};

/// Pipelined commands, already encoded.
#[derive(Debug, Default, Clone)]
pub struct CommandBuffer {
    bytes: Vec<u8>,
    count: usize,
    /// The arguments of the command being built (its length prefix is only
    /// known at the end).
    pending: Vec<u8>,
    pending_args: usize,
    /// Send `ASKING` before every command (a key whose slot is being
    /// imported by the node: `ASKING` only covers the command after it).
    asking: bool,
}

impl CommandBuffer {
    pub fn new() -> CommandBuffer {
        CommandBuffer::default()
    }

    /// Starts a command; add arguments with [`Command::arg`]. The command is
    /// complete when the returned value is dropped (at the end of the
    /// statement, in the usual `buffer.cmd("GET").arg(key);`).
    pub fn cmd(&mut self, name: &str) -> Command<'_> {
        self.push_asking();
        self.pending.clear();
        self.pending_args = 0;
        self.write_arg(name.as_bytes());
        Command { buffer: self }
    }

    /// Appends a command built with redis-rs.
    pub fn add_command(&mut self, command: impl std::borrow::Borrow<redis::Cmd>) {
        self.push_asking();
        self.bytes
            .extend_from_slice(&command.borrow().get_packed_command());
        self.count += 1;
    }

    /// While set, every command added with [`CommandBuffer::cmd`] is
    /// preceded by `ASKING` (counted in [`CommandBuffer::len`]).
    pub fn set_asking(&mut self, asking: bool) {
        self.asking = asking;
    }

    /// Number of commands.
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The encoded commands.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    fn push_asking(&mut self) {
        if self.asking {
            self.bytes.extend_from_slice(b"*1\r\n$6\r\nASKING\r\n");
            self.count += 1;
        }
    }

    fn finish_command(&mut self) {
        self.bytes.push(b'*');
        self.bytes
            .extend_from_slice(itoa::Buffer::new().format(self.pending_args).as_bytes());
        self.bytes.extend_from_slice(b"\r\n");
        self.bytes.extend_from_slice(&self.pending);
        self.count += 1;
    }
}

impl RedisWrite for CommandBuffer {
    fn write_arg(&mut self, arg: &[u8]) {
        self.pending.push(b'$');
        self.pending
            .extend_from_slice(itoa::Buffer::new().format(arg.len()).as_bytes());
        self.pending.extend_from_slice(b"\r\n");
        self.pending.extend_from_slice(arg);
        self.pending.extend_from_slice(b"\r\n");
        self.pending_args += 1;
    }

    fn writer_for_next_arg(&mut self) -> impl Write + '_ {
        ArgWriter {
            buffer: self,
            bytes: Vec::new(),
        }
    }
}

/// A command being built; finished when dropped.
pub struct Command<'a> {
    buffer: &'a mut CommandBuffer,
}

impl Command<'_> {
    /// Adds an argument (bytes, text, numbers: anything redis-rs can send).
    pub fn arg<T: ToRedisArgs>(&mut self, value: T) -> &mut Self {
        value.write_redis_args(self.buffer);
        self
    }
}

impl Drop for Command<'_> {
    fn drop(&mut self) {
        self.buffer.finish_command();
    }
}

/// Collects one argument written through `std::io::Write`.
struct ArgWriter<'a> {
    buffer: &'a mut CommandBuffer,
    bytes: Vec<u8>,
}

impl Write for ArgWriter<'_> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.bytes.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for ArgWriter<'_> {
    fn drop(&mut self) {
        let bytes = std::mem::take(&mut self.bytes);
        self.buffer.write_arg(&bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_exactly_like_redis_rs() {
        let mut ours = CommandBuffer::new();
        ours.cmd("RESTORE")
            .arg(b"k\x00\r\n".as_slice())
            .arg(7_200_000i64)
            .arg(b"payload".as_slice())
            .arg("REPLACE");
        ours.cmd("PTTL").arg("key with spaces");
        ours.cmd("DEL").arg(Vec::<u8>::new());
        ours.cmd("ZADD").arg("z").arg(1.5f64).arg("m").arg(u64::MAX);
        let mut theirs = redis::pipe();
        theirs
            .cmd("RESTORE")
            .arg(b"k\x00\r\n".as_slice())
            .arg(7_200_000i64)
            .arg(b"payload".as_slice())
            .arg("REPLACE");
        theirs.cmd("PTTL").arg("key with spaces");
        theirs.cmd("DEL").arg(Vec::<u8>::new());
        theirs
            .cmd("ZADD")
            .arg("z")
            .arg(1.5f64)
            .arg("m")
            .arg(u64::MAX);
        assert_eq!(ours.bytes(), theirs.get_packed_pipeline().as_slice());
        assert_eq!(ours.len(), 4);
    }

    #[test]
    fn a_command_can_be_built_over_several_statements() {
        let mut buffer = CommandBuffer::new();
        {
            let mut command = buffer.cmd("SET");
            command.arg("k");
            command.arg("v");
        }
        buffer.add_command(redis::cmd("PING").arg("x"));
        assert_eq!(
            buffer.bytes(),
            b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n*2\r\n$4\r\nPING\r\n$1\r\nx\r\n"
        );
        assert_eq!(buffer.len(), 2);
    }
}
