import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it, vi } from 'vitest';
import { dockerOptsFile, routeToOwnSubnet, type DockerOptsChoice } from '../../controller/cli/cni.js';
import { runCli } from '../../controller/cli/main.js';

const subnetEnv = 'FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.7.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n';
const none: DockerOptsChoice = { key: 'DOCKER_OPTS', combined: false, individual: false, noIpMasq: false };

// Each expectation is what flannel's dist/mk-docker-opts.sh writes for the same subnet file and options.
describe("twill docker-opts: mk-docker-opts.sh's output", () => {
  it('writes the individual variables and the combined one when neither -i nor -c is given', () => {
    expect(dockerOptsFile(subnetEnv, none, {})).toBe(
      'DOCKER_OPT_BIP="--bip=10.244.7.1/24"\nDOCKER_OPT_IPMASQ="--ip-masq=false"\nDOCKER_OPT_MTU="--mtu=1450"\nDOCKER_OPTS=" --bip=10.244.7.1/24 --ip-masq=false --mtu=1450"\n',
    );
  });

  it('-c: the combined variable alone', () => {
    expect(dockerOptsFile(subnetEnv, { ...none, combined: true }, {})).toBe('DOCKER_OPTS=" --bip=10.244.7.1/24 --ip-masq=false --mtu=1450"\n');
  });

  it('-i: the individual variables alone', () => {
    expect(dockerOptsFile(subnetEnv, { ...none, individual: true }, {})).toBe(
      'DOCKER_OPT_BIP="--bip=10.244.7.1/24"\nDOCKER_OPT_IPMASQ="--ip-masq=false"\nDOCKER_OPT_MTU="--mtu=1450"\n',
    );
  });

  it('-k: the combined variable under another name, starting with its value in the environment', () => {
    expect(dockerOptsFile(subnetEnv, { ...none, combined: true, key: 'EXTRA' }, { EXTRA: '--debug' })).toBe(
      'EXTRA="--debug  --bip=10.244.7.1/24 --ip-masq=false --mtu=1450"\n',
    );
  });

  it('-m: no --ip-masq; Docker masquerades (--ip-masq=true) when flannel does not', () => {
    expect(dockerOptsFile(subnetEnv, { ...none, noIpMasq: true }, {})).toBe(
      'DOCKER_OPT_BIP="--bip=10.244.7.1/24"\nDOCKER_OPT_MTU="--mtu=1450"\nDOCKER_OPTS=" --bip=10.244.7.1/24 --mtu=1450"\n',
    );
    expect(dockerOptsFile(subnetEnv.replace('IPMASQ=true', 'IPMASQ=false'), { ...none, combined: true }, {})).toContain('--ip-masq=true');
  });

  it('takes DOCKER_OPT_* variables already in the environment, in name order', () => {
    expect(dockerOptsFile(subnetEnv, { ...none, combined: true }, { DOCKER_OPT_DNS: '--dns=10.0.0.10' })).toBe(
      'DOCKER_OPTS=" --bip=10.244.7.1/24 --dns=10.0.0.10 --ip-masq=false --mtu=1450"\n',
    );
  });

  it('refuses a subnet file without the variables, or with an FLANNEL_IPMASQ that is not a boolean', () => {
    expect(() => dockerOptsFile('FLANNEL_MTU=1450\n', none, {})).toThrow(/has no FLANNEL_SUBNET or FLANNEL_IPV6_SUBNET/);
    expect(() => dockerOptsFile(subnetEnv.replace('IPMASQ=true', 'IPMASQ=yes'), none, {})).toThrow(/FLANNEL_IPMASQ=yes: not true or false/);
  });

  it('writes each option whose variable is there: an IPv6-only file gives no --bip, a file without FLANNEL_MTU no --mtu', () => {
    const v6 = 'FLANNEL_IPV6_NETWORK=fd10:244::/56\nFLANNEL_IPV6_SUBNET=fd10:244:0:35::1/64\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n';
    expect(dockerOptsFile(v6, none, {})).toBe('DOCKER_OPT_IPMASQ="--ip-masq=true"\nDOCKER_OPT_MTU="--mtu=1450"\nDOCKER_OPTS=" --ip-masq=true --mtu=1450"\n');
    expect(dockerOptsFile(subnetEnv.replace('FLANNEL_MTU=1450\n', ''), { ...none, combined: true }, {})).toBe(
      'DOCKER_OPTS=" --bip=10.244.7.1/24 --ip-masq=false"\n',
    );
  });

  it('-m leaves out our --ip-masq, not a DOCKER_OPT_IPMASQ from the environment', () => {
    expect(dockerOptsFile(subnetEnv, { ...none, combined: true, noIpMasq: true }, { DOCKER_OPT_IPMASQ: '--ip-masq=true' })).toBe(
      'DOCKER_OPTS=" --bip=10.244.7.1/24 --ip-masq=true --mtu=1450"\n',
    );
  });

  it('finds a route to our own subnet through a gateway, as the script does before it exits 1', () => {
    expect(routeToOwnSubnet(subnetEnv, [{ dst: '10.244.0.0/16' }, { dst: '10.244.7.0/24', gateway: '192.168.1.9' }])).toBe('10.244.7.0/24 via 192.168.1.9');
    expect(routeToOwnSubnet(subnetEnv, [{ dst: '10.244.7.0/24', nexthops: [{ gateway: '192.168.1.9' }, { gateway: '192.168.1.10' }] }])).toBe(
      '10.244.7.0/24 via 192.168.1.9,192.168.1.10',
    );
    expect(
      routeToOwnSubnet(subnetEnv, [
        { dst: '10.244.7.0/24' },
        { dst: '110.244.7.0/24', gateway: '192.168.1.9' },
        { dst: '10.244.8.0/24', gateway: '192.168.1.9' },
      ]),
    ).toBeUndefined();
  });

  describe('the command line', () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'twill-docker-opts-'));
    const subnetFile = path.join(dir, 'subnet.env');
    writeFileSync(subnetFile, subnetEnv);
    afterAll(() => rmSync(dir, { recursive: true, force: true }));

    it('-f and -d as mk-docker-opts.sh takes them; clustered flags (-ic) as getopts does', async () => {
      const dest = path.join(dir, 'docker_opts.env');
      expect(await runCli(['docker-opts', '-f', subnetFile, '-d', dest, '-ic', '-k', 'OPTS'])).toBe(0);
      expect(readFileSync(dest, 'utf8')).toBe(
        'DOCKER_OPT_BIP="--bip=10.244.7.1/24"\nDOCKER_OPT_IPMASQ="--ip-masq=false"\nDOCKER_OPT_MTU="--mtu=1450"\nOPTS=" --bip=10.244.7.1/24 --ip-masq=false --mtu=1450"\n',
      );
      expect(await runCli(['docker-opts', `-f${subnetFile}`, `-d${dest}`, '-cm'])).toBe(0);
      expect(readFileSync(dest, 'utf8')).toBe('DOCKER_OPTS=" --bip=10.244.7.1/24 --mtu=1450"\n');
    });

    it('-d - writes to stdout', async () => {
      const write = vi.spyOn(process.stdout, 'write').mockImplementation(() => true);
      try {
        expect(await runCli(['docker-opts', '--subnet-file', subnetFile, '-d', '-', '-c'])).toBe(0);
        expect(write).toHaveBeenCalledWith('DOCKER_OPTS=" --bip=10.244.7.1/24 --ip-masq=false --mtu=1450"\n');
      } finally {
        write.mockRestore();
      }
    });

    it.each([
      [['-k', 'not a name'], /-k not a name: not a shell variable name/],
      [['-d'], /-d needs a value/],
      [['-z'], /unknown flag -z/],
      [['extra'], /unexpected argument extra/],
    ])('%j is refused before anything is written', async (args, message) => {
      const dest = path.join(dir, 'untouched.env');
      await expect(runCli(['docker-opts', '-f', subnetFile, ...args, ...(args[0] === '-d' ? [] : ['-d', dest])])).rejects.toThrow(message);
      expect(() => readFileSync(dest)).toThrow(/ENOENT/);
    });
  });
});
