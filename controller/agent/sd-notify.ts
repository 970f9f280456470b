import koffi from 'koffi';

/**
 * systemd's notify protocol (Type=notify units): one datagram to the AF_UNIX socket named by
 * NOTIFY_SOCKET. Node has no AF_UNIX datagram sockets, so this goes through libc.
 */
const AF_UNIX = 1;
const SOCK_DGRAM = 2;
const SOCK_CLOEXEC = 0o2000000;

let libc: { socket: koffi.KoffiFunction; sendto: koffi.KoffiFunction; close: koffi.KoffiFunction } | undefined;

function lib() {
  if (!libc) {
    const c = koffi.load('libc.so.6');
    libc = {
      socket: c.func('int socket(int domain, int type, int protocol)'),
      sendto: c.func('long sendto(int fd, const void *buf, size_t len, int flags, const void *addr, uint32_t addrlen)'),
      close: c.func('int close(int fd)'),
    };
  }
  return libc;
}

/** Returns false when not run under systemd (no NOTIFY_SOCKET); throws when the send fails. */
export function sdNotify(state: string, socketPath = process.env.NOTIFY_SOCKET): boolean {
  if (!socketPath) return false;
  const path = Buffer.from(socketPath.startsWith('@') ? '\0' + socketPath.slice(1) : socketPath);
  if (path.length > 107) throw new Error(`NOTIFY_SOCKET ${socketPath}: path too long`);
  // struct sockaddr_un: sa_family_t (u16) + sun_path[108]; an abstract name's length counts exactly.
  const addr = Buffer.alloc(2 + 108);
  addr.writeUInt16LE(AF_UNIX, 0);
  path.copy(addr, 2);
  const addrLen = 2 + path.length + (socketPath.startsWith('@') ? 0 : 1);
  const { socket, sendto, close } = lib();
  const fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0) as number;
  if (fd < 0) throw new Error(`sd_notify: socket() failed (errno ${koffi.errno()})`);
  try {
    const msg = Buffer.from(state);
    const n = sendto(fd, msg, msg.length, 0, addr, addrLen) as number;
    if (n < 0) throw new Error(`sd_notify: sendto ${socketPath} failed (errno ${koffi.errno()})`);
  } finally {
    close(fd);
  }
  return true;
}
