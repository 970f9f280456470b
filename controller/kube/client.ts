/*
 * What the agent uses of @kubernetes/client-node, the one module api.ts loads at run time. The
 * build replaces tsc's output of this file with a tree-shaken bundle of it
 * (scripts/bundle-kube-client.mjs): the package's index loads the client and models of every API
 * group, about 25 MB of JavaScript, which V8 holds and compiles for an agent that only lists,
 * watches and patches Nodes. Run from the sources (tests), this is the package itself.
 */
export { CoreV1Api, Health, KubeConfig, ListWatch, PatchStrategy, setHeaderOptions, Watch } from '@kubernetes/client-node';
