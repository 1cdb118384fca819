// A small CRI client (runtime.v1 RuntimeService + ImageService over containerd's socket), what the
// kubelet would say to containerd, for tests that have no crictl. Every call carries a deadline so
// a stuck CRI plugin fails the test with the call's name instead of hanging it.
//
//   const cri = new CriClient(ctd.address);
//   const pod = await cri.runPodSandbox(hostNetworkPod('p1'));
//   await cri.pullImage(ref, { username, password });
//   cri.close();
import * as grpc from '@grpc/grpc-js';
import { loadProto } from '../../src/proto';

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Any = any;

let pkgCache: Any;
function runtimeV1(): Any {
  pkgCache ??= (loadProto('cri/runtime-v1.proto', { keepCase: true, longs: Number, enums: String, defaults: true }) as Any).runtime.v1;
  return pkgCache;
}

export interface PodSandboxConfig {
  metadata: { name: string; uid: string; namespace: string; attempt?: number };
  hostname?: string;
  log_directory?: string;
  labels?: Record<string, string>;
  linux?: { security_context?: { namespace_options?: { network?: string; pid?: string; ipc?: string } } };
}

export interface AuthConfig {
  username?: string;
  password?: string;
  auth?: string;
  server_address?: string;
}

export interface FilesystemUsage {
  timestamp: number;
  fs_id: { mountpoint: string } | null;
  used_bytes: { value: number } | null;
  inodes_used: { value: number } | null;
}

/** A pod in the host's network namespace: what hostNetwork: true makes the kubelet send (no hostname:
 *  runc cannot set one without a private UTS namespace). */
export function hostNetworkPod(name: string): PodSandboxConfig {
  return {
    metadata: { name, uid: `uid-${name}`, namespace: 'obd-test', attempt: 0 },
    linux: { security_context: { namespace_options: { network: 'NODE', pid: 'POD', ipc: 'POD' } } },
  };
}

export class CriError extends Error {
  constructor(readonly method: string, readonly code: number, details: string) {
    super(`CRI ${method}: ${grpc.status[code] ?? code}: ${details}`);
    this.name = 'CriError';
  }
}

export class CriClient {
  private readonly runtime: Any;
  private readonly image: Any;

  constructor(address: string, private readonly timeoutMs = 60_000) {
    const v1 = runtimeV1();
    const creds = grpc.credentials.createInsecure();
    this.runtime = new v1.RuntimeService(`unix:${address}`, creds);
    this.image = new v1.ImageService(`unix:${address}`, creds);
  }

  close(): void {
    this.runtime.close();
    this.image.close();
  }

  private call<T>(svc: Any, method: string, req: object, timeoutMs = this.timeoutMs): Promise<T> {
    return new Promise((resolve, reject) => {
      svc[method](req, { deadline: Date.now() + timeoutMs }, (err: grpc.ServiceError | null, res: T) => {
        if (err) reject(new CriError(method, err.code, err.details || err.message));
        else resolve(res);
      });
    });
  }

  version(): Promise<{ runtime_name: string; runtime_version: string; runtime_api_version: string }> {
    return this.call(this.runtime, 'Version', { version: 'v1' });
  }

  async runPodSandbox(config: PodSandboxConfig): Promise<string> {
    const r = await this.call<{ pod_sandbox_id: string }>(this.runtime, 'RunPodSandbox', { config }, 120_000);
    return r.pod_sandbox_id;
  }

  async stopPodSandbox(id: string): Promise<void> {
    await this.call(this.runtime, 'StopPodSandbox', { pod_sandbox_id: id });
  }

  async removePodSandbox(id: string): Promise<void> {
    await this.call(this.runtime, 'RemovePodSandbox', { pod_sandbox_id: id });
  }

  async listPodSandbox(): Promise<{ id: string; state: number }[]> {
    return (await this.call<{ items: { id: string; state: number }[] }>(this.runtime, 'ListPodSandbox', {})).items;
  }

  async createContainer(podId: string, pod: PodSandboxConfig, name: string, image: string, command: string[]): Promise<string> {
    const config = {
      metadata: { name, attempt: 0 },
      image: { image },
      command,
      linux: { security_context: { namespace_options: pod.linux?.security_context?.namespace_options } },
    };
    const r = await this.call<{ container_id: string }>(this.runtime, 'CreateContainer',
      { pod_sandbox_id: podId, config, sandbox_config: pod }, 120_000);
    return r.container_id;
  }

  async startContainer(id: string): Promise<void> {
    await this.call(this.runtime, 'StartContainer', { container_id: id });
  }

  async listContainers(): Promise<{ id: string; pod_sandbox_id: string; state: number }[]> {
    return (await this.call<{ containers: { id: string; pod_sandbox_id: string; state: number }[] }>(this.runtime, 'ListContainers', {})).containers;
  }

  async execSync(id: string, cmd: string[], timeoutSec = 30): Promise<{ stdout: string; stderr: string; exitCode: number }> {
    const r = await this.call<{ stdout: Buffer; stderr: Buffer; exit_code: number }>(this.runtime, 'ExecSync',
      { container_id: id, cmd, timeout: timeoutSec }, (timeoutSec + 30) * 1000);
    return { stdout: r.stdout.toString(), stderr: r.stderr.toString(), exitCode: r.exit_code };
  }

  async pullImage(image: string, auth?: AuthConfig): Promise<string> {
    const r = await this.call<{ image_ref: string }>(this.image, 'PullImage', { image: { image }, ...(auth ? { auth } : {}) }, 300_000);
    return r.image_ref;
  }

  async imageStatus(image: string): Promise<{ id: string; size: number; repo_tags: string[] } | null> {
    const r = await this.call<{ image: { id: string; size: number; repo_tags: string[] } | null }>(
      this.image, 'ImageStatus', { image: { image } });
    return r.image ? { id: r.image.id, size: r.image.size, repo_tags: r.image.repo_tags } : null;
  }

  async listImages(): Promise<{ id: string; repo_tags: string[] }[]> {
    return (await this.call<{ images: { id: string; repo_tags: string[] }[] }>(this.image, 'ListImages', {})).images;
  }

  async removeImage(image: string): Promise<void> {
    await this.call(this.image, 'RemoveImage', { image: { image } }, 120_000);
  }

  async imageFsInfo(): Promise<FilesystemUsage[]> {
    return (await this.call<{ image_filesystems: FilesystemUsage[] }>(this.image, 'ImageFsInfo', {})).image_filesystems;
  }
}
