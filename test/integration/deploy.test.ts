import { cpSync, existsSync, linkSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseAgentFlags } from '../../controller/agent/flags.js';
import { run } from '../../controller/util/exec.js';
import { buildTs, repoRoot } from '../support/build.js';

/*
 * What of deploy/ can be checked without systemd as PID 1 or a Kubernetes cluster: systemd's
 * own verifier on the unit; the manifest parsed by a real YAML parser and its agent command line
 * by the agent's flag parser; the CNI install init container's script run for real (against a
 * scratch "image" and "host" directory); and the manifest's conflist run the way a container
 * runtime runs a plugin list, through the plugin that script installed and the real bridge,
 * host-local and portmap plugins, in namespaces "tqd-node" and "tqd-pod".
 */
const unitPath = path.join(repoRoot, 'deploy/systemd/twill.service');
const manifestPath = path.join(repoRoot, 'deploy/kubernetes/twill.yaml');
const uninstallManifestPath = path.join(repoRoot, 'deploy/kubernetes/twill-uninstall.yaml');
const UNINSTALL_NS = 'tu-ds';
const monitoringPath = path.join(repoRoot, 'deploy/prometheus-operator/twill-monitoring.yaml');
/** What the downward API gives status.hostIP on some node, for the tests below. */
const NODE_IP = '10.0.0.21';
const NODE_NS = 'tqd-node';
const POD_NS = 'tqd-pod';
const SYSTEM_CNI_BIN = '/usr/lib/cni';

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- Kubernetes objects, checked field by field below
type Obj = any;
let docs: Obj[];
let uninstallDocs: Obj[];
let monitoring: Obj[];
let scratch: string;
const kind = (k: string) => docs.find((d) => d?.kind === k);
const daemonSet = () => kind('DaemonSet');
const podSpec = () => daemonSet().spec.template.spec;
const initContainer = (name: string) => podSpec().initContainers.find((c: Obj) => c.name === name);

/** Parsed by PyYAML (python3-yaml), a full YAML 1.1 parser, handed over as JSON. */
async function parseYaml(text: string): Promise<Obj[]> {
  const res = await run(['python3', '-c', 'import json, sys, yaml; json.dump(list(yaml.safe_load_all(sys.stdin)), sys.stdout)'], {
    input: text,
    allowFailure: true,
  });
  if (res.code !== 0) throw new Error(`YAML: ${res.stderr.trim().split('\n').pop()} (python3-yaml is needed for this test)`);
  return JSON.parse(res.stdout) as Obj[];
}

/** The container's environment as kubelet sets it: values, ConfigMap keys, and the downward API's status.hostIP. */
function containerEnv(c: Obj, cm: Obj): Record<string, string> {
  const value = (e: Obj): string => {
    if (e.value !== undefined) return e.value;
    if (e.valueFrom.configMapKeyRef) return cm.data[e.valueFrom.configMapKeyRef.key];
    if (e.valueFrom.fieldRef?.fieldPath === 'status.hostIP') return NODE_IP;
    throw new Error(`env ${e.name}: a source this test does not know`);
  };
  return Object.fromEntries(c.env.map((e: Obj) => [e.name, value(e)]));
}

/** kubelet's expansion of $(VAR) in command and args from the container's environment; $$ is a literal $. */
const expandArgs = (args: string[], env: Record<string, string>) =>
  args.map((a) => a.replace(/\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g, (m, name?: string) => (name === undefined ? '$' : (env[name] ?? m))));

/** Unit file lines "Key=value" of one section, in order. */
function unitSection(text: string, section: string): Map<string, string> {
  const out = new Map<string, string>();
  let current = '';
  for (const line of text.split('\n')) {
    const header = /^\[(\w+)\]$/.exec(line.trim());
    if (header) current = header[1];
    else if (current === section && /^\w+=/.test(line)) out.set(line.slice(0, line.indexOf('=')), line.slice(line.indexOf('=') + 1));
  }
  return out;
}

beforeAll(async () => {
  buildTs();
  docs = await parseYaml(readFileSync(manifestPath, 'utf8'));
  uninstallDocs = await parseYaml(readFileSync(uninstallManifestPath, 'utf8'));
  monitoring = (await parseYaml(readFileSync(monitoringPath, 'utf8'))).filter(Boolean);
  scratch = mkdtempSync(path.join(tmpdir(), 'tqd-'));
  for (const ns of [NODE_NS, POD_NS, UNINSTALL_NS]) await run(['ip', 'netns', 'del', ns], { allowFailure: true });
}, 120_000);

afterAll(async () => {
  for (const ns of [POD_NS, NODE_NS, UNINSTALL_NS]) await run(['ip', 'netns', 'del', ns], { allowFailure: true });
  rmSync(scratch, { recursive: true, force: true });
});

describe('systemd unit', () => {
  it("is Type=notify, restarts on failure, and passes systemd's verifier without a warning", async () => {
    const text = readFileSync(unitPath, 'utf8');
    const service = unitSection(text, 'Service');
    expect(service.get('Type')).toBe('notify');
    expect(service.get('Restart')).toBe('on-failure');
    expect(service.get('ExecStart')).toBe('/opt/twill/bin/twill agent $TWILL_AGENT_ARGS');
    // The verifier also checks that ExecStart is executable: point it at this checkout's twill.
    const copy = path.join(scratch, 'twill.service');
    writeFileSync(copy, text.replace('ExecStart=/opt/twill/bin/twill ', `ExecStart=${repoRoot}/bin/twill `));
    const res = await run(['systemd-analyze', 'verify', '--man=no', copy], { allowFailure: true });
    expect(res.stderr + res.stdout).toBe('');
    expect(res.code).toBe(0);
  });

  it('has a verifier that would catch a bad key (so the check above means something)', async () => {
    const bad = path.join(scratch, 'bad.service');
    writeFileSync(bad, readFileSync(unitPath, 'utf8').replace('Type=notify', 'Type=notifyy'));
    expect((await run(['systemd-analyze', 'verify', '--man=no', bad], { allowFailure: true })).stderr).toContain('Failed to parse service type');
  });
});

describe('Kubernetes manifest', () => {
  it('is a Namespace, a ConfigMap and a DaemonSet whose selector matches its pods', () => {
    expect(docs.filter(Boolean).map((d) => `${d.apiVersion} ${d.kind}`)).toEqual(['v1 Namespace', 'v1 ConfigMap', 'apps/v1 DaemonSet']);
    const ds = daemonSet();
    expect(ds.metadata.namespace).toBe(kind('Namespace').metadata.name);
    expect(ds.spec.template.metadata.labels).toMatchObject(ds.spec.selector.matchLabels);
  });

  it('runs the agent privileged on the host network with bpffs, /run/twill, /run/flannel and /run/netns from the host', () => {
    const spec = podSpec();
    expect(spec.hostNetwork).toBe(true);
    const [agent] = spec.containers;
    expect(agent.securityContext.privileged).toBe(true);
    const hostPath = new Map<string, string>(spec.volumes.filter((v: Obj) => v.hostPath).map((v: Obj) => [v.name, v.hostPath.path]));
    const mounted = new Map<string, string>(agent.volumeMounts.map((m: Obj) => [m.mountPath, hostPath.get(m.name)]));
    for (const dir of ['/sys/fs/bpf', '/run/twill', '/run/flannel', '/run/netns', '/run/xtables.lock']) expect(mounted.get(dir)).toBe(dir);
    const declared = new Set(spec.volumes.map((v: Obj) => v.name));
    for (const c of [...spec.initContainers, ...spec.containers]) for (const m of c.volumeMounts) expect(declared).toContain(m.name);
  });

  it('gives the agent a command line and environment its flag parser accepts, with --ip-masq, etcd from the ConfigMap', () => {
    const [agent] = podSpec().containers;
    const cm = kind('ConfigMap');
    const env = containerEnv(agent, cm);
    expect(agent.command.at(-1)).toBe('/usr/lib/twill/dist/controller/cli.js');
    expect(agent.args[0]).toBe('agent');
    const flags = parseAgentFlags(expandArgs(agent.args.slice(1), env), env);
    expect(flags).toMatchObject({ ipMasq: true, etcdEndpoints: [cm.data['etcd-endpoints']], etcdPrefix: cm.data['etcd-prefix'], healthzPort: 8471 });
    for (const probe of [agent.livenessProbe, agent.readinessProbe]) expect(probe.httpGet.port).toBe(flags.healthzPort);
    expect(agent.readinessProbe.httpGet.path).toBe('/readyz');
  });

  it("serves /metrics on the node's address, where the probes and the prometheus.io annotations point", () => {
    const spec = podSpec();
    const [agent] = spec.containers;
    const flags = parseAgentFlags(expandArgs(agent.args.slice(1), containerEnv(agent, kind('ConfigMap'))));
    // Not loopback (a Prometheus pod could not reach it) and not 0.0.0.0 (every interface of the node).
    expect(flags.healthzIp).toBe(NODE_IP);
    // kubelet probes the pod's IP when no host is given, which with hostNetwork is the node's.
    expect(spec.hostNetwork).toBe(true);
    for (const probe of [agent.livenessProbe, agent.readinessProbe]) expect(probe.httpGet.host).toBeUndefined();
    const annotations = daemonSet().spec.template.metadata.annotations;
    expect(annotations).toEqual({ 'prometheus.io/scrape': 'true', 'prometheus.io/port': String(flags.healthzPort), 'prometheus.io/path': '/metrics' });
    expect(agent.ports).toEqual([{ name: 'metrics', containerPort: flags.healthzPort, protocol: 'TCP' }]);
  });

  it('has an optional headless Service and ServiceMonitor that select the agents and scrape that port', () => {
    expect(monitoring.map((d) => `${d.apiVersion} ${d.kind}`)).toEqual(['v1 Service', 'monitoring.coreos.com/v1 ServiceMonitor']);
    const [service, monitor] = monitoring;
    const ds = daemonSet();
    for (const d of monitoring) expect(d.metadata.namespace).toBe(ds.metadata.namespace);
    expect(service.spec.clusterIP).toBe('None');
    expect(ds.spec.template.metadata.labels).toMatchObject(service.spec.selector);
    const [port] = service.spec.ports;
    expect(podSpec().containers[0].ports.find((p: Obj) => p.name === port.targetPort)?.containerPort).toBe(port.port);
    expect(service.metadata.labels).toMatchObject(monitor.spec.selector.matchLabels);
    expect(monitor.spec.namespaceSelector.matchNames).toEqual([ds.metadata.namespace]);
    expect(monitor.spec.endpoints).toMatchObject([{ port: port.name, path: '/metrics', interval: '30s' }]);
    expect(monitor.spec.endpoints[0].relabelings).toEqual([{ sourceLabels: ['__meta_kubernetes_pod_node_name'], targetLabel: 'node' }]);
  });

  it('installs the conflist from the ConfigMap where kubelet looks', () => {
    const c = initContainer('install-cni');
    const cfgMount = c.volumeMounts.find((m: Obj) => m.name === 'twill-cfg').mountPath;
    expect(c.args).toEqual(['-f', path.join(cfgMount, 'cni-conf.json'), '/etc/cni/net.d/10-flannel.conflist']);
    expect(JSON.parse(kind('ConfigMap').data['cni-conf.json']).plugins.map((p: Obj) => p.type)).toEqual(['flannel', 'portmap']);
  });
});

describe("the manifest's CNI install and conflist, for real", () => {
  let pluginDir: string;

  it("the install-cni-plugin script copies twill to the host and installs a 'flannel' plugin that runs from that copy", async () => {
    // The image's /usr/lib/twill, assembled from this checkout; the host's /opt as a scratch dir.
    const image = path.join(scratch, 'image');
    mkdirSync(path.join(image, 'node/bin'), { recursive: true });
    for (const entry of ['package.json', 'bin', 'dist']) cpSync(path.join(repoRoot, entry), path.join(image, entry), { recursive: true });
    symlinkSync(path.join(repoRoot, 'node_modules'), path.join(image, 'node_modules'));
    linkSync(process.execPath, path.join(image, 'node/bin/node'));
    const host = path.join(scratch, 'host');
    pluginDir = path.join(host, 'opt/cni/bin');
    // Both hostPath volumes are DirectoryOrCreate: they exist when the container starts.
    for (const dir of [pluginDir, path.join(host, 'opt/twill')]) mkdirSync(dir, { recursive: true });
    const c = initContainer('install-cni-plugin');
    expect(c.volumeMounts.map((m: Obj) => m.mountPath).sort()).toEqual(['/opt/cni/bin', '/opt/twill']);
    const [shell, flags, body] = c.command as string[];
    const script = body.replaceAll('/usr/lib/twill', image).replaceAll('/opt/', `${host}/opt/`);
    for (let i = 0; i < 2; i++) {
      // twice: the second run (a pod restart) finds its version complete and only reinstalls the plugin
      const res = await run([shell, flags, script], { allowFailure: true });
      expect(res.stderr).toBe('');
      expect(res.code).toBe(0);
    }
    const version = (JSON.parse(readFileSync(path.join(repoRoot, 'package.json'), 'utf8')) as { version: string }).version;
    const installed = path.join(host, 'opt/twill', version);
    expect(existsSync(path.join(installed, '.complete'))).toBe(true);
    expect(readFileSync(path.join(pluginDir, 'flannel'), 'utf8')).toContain(`exec ${installed}/node/bin/node ${installed}/dist/controller/cni/twill-cni.cjs`);
  });

  it('a pod is added and deleted through flannel + portmap with the real bridge, host-local and portmap plugins', async () => {
    expect(pluginDir).toBeDefined();
    const list = JSON.parse(kind('ConfigMap').data['cni-conf.json']);
    const subnetFile = path.join(scratch, 'subnet.env');
    writeFileSync(subnetFile, 'FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.5.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n');
    for (const ns of [NODE_NS, POD_NS]) await run(['ip', 'netns', 'add', ns]);
    await run(['ip', '-n', NODE_NS, 'link', 'set', 'lo', 'up']);
    // Only the paths a real node has at their defaults are redirected into the scratch dir.
    const paths: Record<string, object> = { flannel: { subnetFile, dataDir: path.join(scratch, 'flannel'), ipam: { dataDir: path.join(scratch, 'ipam') } } };
    const portMappings = [{ hostPort: 18080, containerPort: 80, protocol: 'tcp' }];
    /** What a runtime does with a conflist: each plugin in turn (reversed for DEL), with name, version and the previous result. */
    const runList = async (command: 'ADD' | 'DEL') => {
      let prevResult: object | undefined;
      for (const plugin of command === 'ADD' ? list.plugins : [...list.plugins].reverse()) {
        const conf = {
          ...plugin,
          ...paths[plugin.type],
          name: list.name,
          cniVersion: list.cniVersion,
          ...(prevResult && { prevResult }),
          ...(plugin.capabilities?.portMappings && { runtimeConfig: { portMappings } }),
        };
        const res = await run([path.join(existsSync(path.join(pluginDir, plugin.type)) ? pluginDir : SYSTEM_CNI_BIN, plugin.type)], {
          netns: NODE_NS,
          input: JSON.stringify(conf),
          allowFailure: true,
          env: {
            PATH: process.env.PATH,
            CNI_COMMAND: command,
            CNI_CONTAINERID: 'tqd-pod-1',
            CNI_NETNS: `/run/netns/${POD_NS}`,
            CNI_IFNAME: 'eth0',
            CNI_PATH: `${pluginDir}:${SYSTEM_CNI_BIN}`,
          },
        });
        if (res.code !== 0) throw new Error(`${command} ${plugin.type}: ${res.stdout}${res.stderr}`);
        if (command === 'ADD') prevResult = JSON.parse(res.stdout);
      }
      return prevResult as { ips: { address: string; gateway: string }[] } | undefined;
    };
    const result = (await runList('ADD'))!;
    const podIp = result.ips[0].address.split('/')[0];
    expect(result.ips[0]).toMatchObject({ address: expect.stringMatching(/^10\.244\.5\.\d+\/24$/), gateway: '10.244.5.1' });
    expect((await run(['ping', '-c', '1', '-W', '2', podIp], { netns: NODE_NS, allowFailure: true })).code).toBe(0);
    const podRoutes = await run(['ip', '-n', POD_NS, 'route'], {});
    expect(podRoutes.stdout).toContain('default via 10.244.5.1'); // isDefaultGateway
    expect((await run(['ip', '-n', POD_NS, 'link', 'show', 'eth0'])).stdout).toContain('mtu 1450');
    expect((await run(['iptables-save', '-t', 'nat'], { netns: NODE_NS })).stdout).toMatch(
      new RegExp(`--dport 18080 .*--to-destination ${podIp.replaceAll('.', '\\.')}:80`),
    );
    await runList('DEL');
    expect((await run(['ip', '-n', POD_NS, 'link', 'show', 'eth0'], { allowFailure: true })).code).not.toBe(0);
    expect((await run(['iptables-save', '-t', 'nat'], { netns: NODE_NS })).stdout).not.toContain('18080');
  });
});

describe('the uninstall manifest', () => {
  const ds = () => uninstallDocs.find((d) => d?.kind === 'DaemonSet');
  const step = () => ds().spec.template.spec.initContainers[0];
  /** The agent DaemonSet's host paths by their path in the container, and the uninstall's. */
  const hostMounts = (spec: Obj, c: Obj) => {
    const hostPath = new Map<string, string>(spec.volumes.filter((v: Obj) => v.hostPath).map((v: Obj) => [v.name, v.hostPath.path]));
    return new Map<string, string>(c.volumeMounts.map((m: Obj) => [m.mountPath, hostPath.get(m.name)]));
  };

  it("is a DaemonSet alone, in twill's namespace, on every node twill runs on, with the host's PIDs (to see an agent) and network", () => {
    expect(uninstallDocs.filter(Boolean).map((d) => `${d.apiVersion} ${d.kind}`)).toEqual(['apps/v1 DaemonSet']);
    expect(ds().metadata.namespace).toBe(daemonSet().metadata.namespace);
    expect(ds().spec.template.metadata.labels).toMatchObject(ds().spec.selector.matchLabels);
    const spec = ds().spec.template.spec;
    expect({ hostNetwork: spec.hostNetwork, hostPID: spec.hostPID, privileged: step().securityContext.privileged }).toEqual({
      hostNetwork: true,
      hostPID: true,
      privileged: true,
    });
    expect(spec.tolerations).toEqual(podSpec().tolerations);
    expect(spec.affinity).toEqual(podSpec().affinity);
    for (const c of [...spec.initContainers, ...spec.containers]) expect(c.image).toBe(podSpec().containers[0].image);
  });

  it("runs `twill uninstall` on the very host paths the agent's DaemonSet writes: pins, state, subnet file, plugin, conflist, copies", async () => {
    const { parseArgs } = await import('../../controller/cli/args.js');
    const { uninstallOpts } = await import('../../controller/cli/options.js');
    const c = step();
    expect(c.command).toEqual(podSpec().containers[0].command);
    expect(c.args[0]).toBe('uninstall');
    const o = parseArgs(c.args.slice(1), uninstallOpts);
    const agent = hostMounts(podSpec(), podSpec().containers[0]);
    const mine = hostMounts(ds().spec.template.spec, c);
    const agentContainer = podSpec().containers[0];
    const agentFlags = parseAgentFlags(expandArgs(agentContainer.args.slice(1), containerEnv(agentContainer, kind('ConfigMap'))), {});
    // What the agent writes, where the uninstall looks for it (flag defaults included), from the same host directory.
    for (const [what, p] of [
      ['pins', o['pin-dir']],
      ['subnet file', path.dirname(o['subnet-file'])],
      ['state', '/run/twill'],
      ['xtables lock', '/run/xtables.lock'],
    ] as const) {
      const mount = [...agent.keys()].find((m) => p === m || p.startsWith(`${m}/`));
      expect(mount, what).toBeDefined();
      expect(mine.get(mount!), what).toBe(agent.get(mount!));
    }
    expect(o['pin-dir']).toBe(agentFlags.pinDir);
    expect(o['subnet-file']).toBe(agentFlags.subnetFile);
    const plugin = initContainer('install-cni-plugin');
    const pluginHost = hostMounts(podSpec(), plugin);
    expect(mine.get(o['cni-bin-dir'])).toBe(pluginHost.get('/opt/cni/bin'));
    expect(/cni install --dir (\S+) --name (\S+)/.exec(plugin.command[2])?.slice(1)).toEqual([o['cni-bin-dir'], o['cni-plugin']]);
    expect(mine.get(o['install-dir'])).toBe(pluginHost.get('/opt/twill'));
    expect(o['cni-conf']).toBe(initContainer('install-cni').args[2]);
    expect(mine.get(path.dirname(o['cni-conf']))).toBe(hostMounts(podSpec(), initContainer('install-cni')).get('/etc/cni/net.d'));
  });

  it('its command, run for real against scratch host directories, removes the plugin, the conflist and the copy, then finds nothing', async () => {
    const host = path.join(scratch, 'uninstall-host');
    const redirect = (a: string) => a.replace(/=\//, `=${host}/`);
    const c = step();
    const argv = [
      process.execPath,
      path.join(repoRoot, 'dist/controller/cli.js'),
      ...c.args.map(redirect),
      `--pin-dir=/sys/fs/bpf/${UNINSTALL_NS}`,
      `--subnet-file=${host}/run/flannel/subnet.env`,
    ];
    const plugin = path.join(host, 'opt/cni/bin/flannel');
    const conf = path.join(host, 'etc/cni/net.d/10-flannel.conflist');
    const copy = path.join(host, 'opt/twill/0.1.0');
    mkdirSync(copy, { recursive: true });
    mkdirSync(path.dirname(conf), { recursive: true });
    cpSync(path.join(repoRoot, 'package.json'), path.join(copy, 'package.json'));
    writeFileSync(conf, kind('ConfigMap').data['cni-conf.json']);
    const { installCniPlugin } = await import('../../controller/cni/install.js');
    installCniPlugin(path.dirname(plugin), 'flannel');
    await run(['ip', 'netns', 'add', UNINSTALL_NS]);
    const first = await run(argv, { netns: UNINSTALL_NS, allowFailure: true });
    expect(first.stderr).toBe('');
    expect(first.code).toBe(0);
    expect(first.stdout.split('\n').filter(Boolean).sort()).toEqual(
      [
        `removed  ${plugin} (twill's CNI plugin, running ${repoRoot})`,
        `removed  ${conf} (CNI conflist, --cni-conf)`,
        `removed  ${copy} (twill's copy for the CNI plugin)`,
      ].sort(),
    );
    for (const p of [plugin, conf, copy]) expect(existsSync(p), p).toBe(false);
    const second = await run(argv, { netns: UNINSTALL_NS, allowFailure: true });
    expect(second).toMatchObject({ code: 0, stdout: `nothing to remove: no trace of twill for /sys/fs/bpf/${UNINSTALL_NS} on this node\n` });
  });
});
