import { closeSync, openSync } from 'node:fs';
import koffi from 'koffi';

const CLONE_NEWNET = 0x40000000;
const setns = koffi.load('libc.so.6').func('int setns(int fd, int nstype)');

/**
 * Moves the calling thread (Node's main thread) into a network namespace and returns a function
 * that moves it back. Only for synchronous work in between: libuv's worker threads stay put.
 */
export function enterNetns(path: string): () => void {
  const home = openSync('/proc/thread-self/ns/net', 'r');
  const target = openSync(path, 'r');
  try {
    if (setns(target, CLONE_NEWNET) !== 0) throw new Error(`setns ${path} failed (errno ${koffi.errno()})`);
  } finally {
    closeSync(target);
  }
  return () => {
    try {
      if (setns(home, CLONE_NEWNET) !== 0) throw new Error(`setns back failed (errno ${koffi.errno()})`);
    } finally {
      closeSync(home);
    }
  };
}
