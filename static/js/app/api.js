// @ts-check
/**
 * The REST API of docs/api.md (client/api.py), over `fetch`.
 *
 * Binary values are Uint8Arrays here and standard base64 only on the wire (`*_b64`).
 * Authentication: the device token as `Authorization: Bearer` once the device has one (the
 * `devices/self/...` endpoints accept nothing else), and in a browser also the session
 * cookie (`credentials: 'same-origin'`) with the CSRF token from the `csrftoken` cookie on
 * every unsafe method, which sign-up and the session endpoints check when cookies are
 * present. Every failure is a ClientError: the server's `{code, message, fields}` keeps its
 * code, a request that never got an answer is `unreachable`, an answer outside the contract
 * `bad_response`.
 */

import { errorCodeFromSlug } from '../protocol/index.js';
import { ClientError, LocalCode } from './errors.js';

/** @typedef {{deviceId: number, registrationId: number, certificate: Uint8Array}} DeviceEntry */
/** @typedef {{deviceId: number, registrationId: number, bundle: Uint8Array}} ClaimedBundle */
/** @typedef {{oneTimePrekeys: number, kemPrekeys: number, lowWatermark: number, maxStored: number}} PreKeyCounts */
/** @typedef {{deviceId: number, name: string, createdAt: string | null, lastSeenAt: string | null, current: boolean}} OwnDevice */
/** @typedef {{value: string, expiresAt: number}} Expiring a token or address and when it expires (ms) */
/**
 * The `device` object of sign-up, as encoded keys.
 * @typedef {{certificate: Uint8Array, name: string, signedPrekey: Uint8Array,
 *   lastResortKemPrekey: Uint8Array, oneTimePrekeys: Uint8Array[], kemPrekeys: Uint8Array[]}} DeviceUpload
 */

const UNSAFE = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);

/** @param {Uint8Array} data */
export function toBase64(data) {
  let binary = '';
  for (let i = 0; i < data.length; i += 0x8000) {
    binary += String.fromCharCode(...data.subarray(i, i + 0x8000));
  }
  return btoa(binary);
}

/** @param {unknown} text */
export function fromBase64(text) {
  if (typeof text !== 'string' || !/^[A-Za-z0-9+/]*={0,2}$/.test(text) || text.length % 4) {
    throw badResponse('a *_b64 field is not standard base64');
  }
  return Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
}

/** @param {string} message */
function badResponse(message) {
  return new ClientError(LocalCode.BAD_RESPONSE, message);
}

/** @param {string} name */
function readCookie(name) {
  const cookies = globalThis.document?.cookie ?? '';
  for (const part of cookies.split(';')) {
    const [key, ...value] = part.trim().split('=');
    if (key === name) return decodeURIComponent(value.join('='));
  }
  return null;
}

/**
 * @param {any} data
 * @param {string} key
 * @param {'string' | 'number' | 'object'} type
 */
function field(data, key, type) {
  const value = data?.[key];
  if (typeof value !== type || value === null || (type === 'number' && !Number.isInteger(value))) {
    throw badResponse(`field ${key} is missing or not a${type === 'object' ? 'n' : ''} ${type}`);
  }
  return value;
}

/** @param {DeviceUpload} d */
function deviceBody(d) {
  return {
    certificate_b64: toBase64(d.certificate),
    name: d.name,
    signed_prekey_b64: toBase64(d.signedPrekey),
    last_resort_kem_prekey_b64: toBase64(d.lastResortKemPrekey),
    one_time_prekeys_b64: d.oneTimePrekeys.map(toBase64),
    kem_prekeys_b64: d.kemPrekeys.map(toBase64),
  };
}

/** @param {any} data @returns {PreKeyCounts} */
function counts(data) {
  return {
    oneTimePrekeys: field(data, 'one_time_prekeys', 'number'),
    kemPrekeys: field(data, 'kem_prekeys', 'number'),
    lowWatermark: field(data, 'low_watermark', 'number'),
    maxStored: field(data, 'max_stored', 'number'),
  };
}

export class Api {
  /**
   * @param {{baseUrl: string, token?: string | null, fetch?: typeof globalThis.fetch}} options
   * `fetch` is for tests (Node has no cookie jar; they authenticate with the token).
   */
  constructor({ baseUrl, token = null, fetch = globalThis.fetch.bind(globalThis) }) {
    this.baseUrl = baseUrl.replace(/\/+$/, '');
    /** @type {string | null} */
    this.token = token;
    this._fetch = fetch;
  }

  /**
   * `token` replaces the device token for this request (a link token, for a device being
   * linked); `signal` aborts it (a long poll given up).
   * @param {string} method
   * @param {string} path
   * @param {unknown} [body]
   * @param {{bearer?: boolean, token?: string | null, signal?: AbortSignal}} [options]
   * @returns {Promise<any>}
   */
  async request(method, path, body, { bearer = true, token = null, signal } = {}) {
    /** @type {Record<string, string>} */
    const headers = { Accept: 'application/json' };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    const credential = token ?? (bearer ? this.token : null);
    if (credential) headers.Authorization = `Bearer ${credential}`;
    const csrf = UNSAFE.has(method) ? readCookie('csrftoken') : null;
    if (csrf) headers['X-CSRFToken'] = csrf;
    const what = `${method} ${path}`;
    let response;
    try {
      response = await this._fetch(this.baseUrl + path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        credentials: 'same-origin',
        ...(signal ? { signal } : {}),
      });
    } catch (error) {
      if (signal?.aborted) throw new ClientError(LocalCode.CLOSED, `${what}: given up`);
      throw new ClientError(LocalCode.UNREACHABLE, `cannot reach ${this.baseUrl} (${what}): ${error}`);
    }
    const text = await response.text().catch(() => '');
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch {
      if (response.ok) throw badResponse(`${what}: the answer is not JSON`);
    }
    if (response.ok) return data;
    throw errorFrom(response, data, what);
  }

  /**
   * A request whose answer is read from its headers or streamed (attachment blobs): the
   * Response when it succeeded, else the server's error as a ClientError.
   * @param {string} method
   * @param {string} path
   * @param {{body?: Uint8Array, headers?: Record<string, string>, signal?: AbortSignal}} [options]
   * @returns {Promise<Response>}
   */
  async raw(method, path, { body, headers = {}, signal } = {}) {
    const what = `${method} ${path}`;
    /** @type {Record<string, string>} */
    const all = { ...headers };
    if (this.token) all.Authorization = `Bearer ${this.token}`;
    const csrf = UNSAFE.has(method) ? readCookie('csrftoken') : null;
    if (csrf) all['X-CSRFToken'] = csrf;
    let response;
    try {
      response = await this._fetch(this.baseUrl + path, {
        method,
        headers: all,
        body: /** @type {BodyInit | undefined} */ (body),
        credentials: 'same-origin',
        ...(signal ? { signal } : {}),
      });
    } catch (error) {
      if (signal?.aborted) throw new ClientError(LocalCode.CLOSED, `${what}: cancelled`);
      throw new ClientError(LocalCode.UNREACHABLE, `cannot reach ${this.baseUrl} (${what}): ${error}`);
    }
    if (response.ok) return response;
    let data = null;
    try {
      data = method === 'HEAD' ? null : JSON.parse(await response.text());
    } catch {
      // no JSON body: the status says it
    }
    throw errorFrom(response, data, what);
  }


  // --- accounts and sessions --------------------------------------------------------

  /**
   * @param {string} username
   * @param {string} password
   * @param {Uint8Array} identityKey
   * @param {DeviceUpload} device
   * @param {Uint8Array} deviceList the SignedDeviceList (version 1) naming this device
   * @param {{birthDate?: string | null, ageConfirmed?: boolean | null, consents?: string[] | null}} [answers]
   *   the region's age rule (`birth_date` YYYY-MM-DD, or `age_confirmed`) and the consent
   *   purposes agreed to; each is sent only when given
   */
  async createAccount(username, password, identityKey, device, deviceList, answers = {}) {
    /** @type {Record<string, unknown>} */
    const body = {
      username,
      password,
      identity_key_b64: toBase64(identityKey),
      device: deviceBody(device),
      device_list_b64: toBase64(deviceList),
    };
    if (answers.birthDate) body.birth_date = answers.birthDate;
    if (typeof answers.ageConfirmed === 'boolean') body.age_confirmed = answers.ageConfirmed;
    if (answers.consents) body.consents = answers.consents;
    const data = await this.request('POST', '/api/v1/accounts', body, { bearer: false });
    return {
      username: /** @type {string} */ (field(data, 'username', 'string')),
      deviceId: /** @type {number} */ (field(data, 'device_id', 'number')),
      token: /** @type {string} */ (field(data, 'token', 'string')),
    };
  }

  /**
   * @param {string} username
   * @param {string} password
   */
  async login(username, password) {
    await this.request('POST', '/api/v1/session', { username, password }, { bearer: false });
  }

  async logout() {
    await this.request('DELETE', '/api/v1/session', undefined, { bearer: false });
  }

  // --- other accounts ---------------------------------------------------------------

  /**
   * The account's identity key, devices and signed device list (null if the server sent
   * none). `options` as for request(): a device being linked asks with no token, or its
   * link token.
   * @param {string} username
   * @param {{bearer?: boolean, token?: string | null}} [options]
   */
  async accountKeys(username, options) {
    const data = await this.request('GET', `/api/v1/accounts/${encodeURIComponent(username)}/keys`, undefined, options);
    const list = data?.device_list_b64;
    return {
      username: /** @type {string} */ (field(data, 'username', 'string')),
      identityKey: fromBase64(data?.identity_key_b64),
      /** @type {Uint8Array | null} */
      deviceList: typeof list === 'string' && list ? fromBase64(list) : null,
      /** @type {DeviceEntry[]} */
      devices: listOf(data, 'devices').map((item) => ({
        deviceId: field(item, 'device_id', 'number'),
        registrationId: field(item, 'registration_id', 'number'),
        certificate: fromBase64(item.certificate_b64),
      })),
    };
  }

  /**
   * @param {string} username
   * @param {number[]} deviceIds
   */
  async claimBundles(username, deviceIds) {
    const path = `/api/v1/accounts/${encodeURIComponent(username)}/bundles`;
    const data = await this.request('POST', path, { device_ids: deviceIds });
    return {
      username: /** @type {string} */ (field(data, 'username', 'string')),
      identityKey: fromBase64(data?.identity_key_b64),
      /** @type {ClaimedBundle[]} */
      bundles: listOf(data, 'bundles').map((item) => ({
        deviceId: field(item, 'device_id', 'number'),
        registrationId: field(item, 'registration_id', 'number'),
        bundle: fromBase64(item.bundle_b64),
      })),
    };
  }

  // --- this account's devices -------------------------------------------------------

  /** @returns {Promise<OwnDevice[]>} */
  async devices() {
    const data = await this.request('GET', '/api/v1/devices');
    const items = Array.isArray(data) ? data : data?.devices;
    if (!Array.isArray(items)) throw badResponse('GET /api/v1/devices: not a list');
    return items.map(ownDevice);
  }

  /**
   * @param {number} deviceId
   * @param {string} name
   * @returns {Promise<OwnDevice>}
   */
  async renameDevice(deviceId, name) {
    return ownDevice(await this.request('PATCH', `/api/v1/devices/${deviceId}`, { name }));
  }

  /**
   * @param {number} deviceId
   * @param {Uint8Array} deviceList the new signed list, without the device
   */
  async revokeDevice(deviceId, deviceList) {
    await this.request('DELETE', `/api/v1/devices/${deviceId}`, { device_list_b64: toBase64(deviceList) });
  }

  // --- linking a device -------------------------------------------------------------

  /** New device: a provisioning address for its link code. @returns {Promise<Expiring>} */
  async createProvisioningAddress() {
    const data = await this.request('POST', '/api/v1/provisioning', undefined, { bearer: false });
    return expiring(data, 'address');
  }

  /**
   * New device: the sealed provisioning message, once there (null when `wait` seconds
   * passed without it).
   * @param {string} address
   * @param {number} wait seconds, at most 30
   * @param {AbortSignal} [signal]
   */
  async waitForProvisioning(address, wait, signal) {
    const path = `/api/v1/provisioning/${encodeURIComponent(address)}?wait=${wait}`;
    const data = await this.request('GET', path, undefined, { bearer: false, signal });
    if (data === null) return null; // 204: nothing yet
    return fromBase64(data?.sealed_b64);
  }

  /** Existing device: a single-use token for one new device. @returns {Promise<Expiring>} */
  async createLinkToken() {
    return expiring(await this.request('POST', '/api/v1/devices/link-tokens'), 'link_token');
  }

  /**
   * Existing device: leave the sealed provisioning message at the new device's address.
   * @param {string} address
   * @param {Uint8Array} sealed
   */
  async putProvisioning(address, sealed) {
    await this.request('PUT', `/api/v1/provisioning/${encodeURIComponent(address)}`, { sealed_b64: toBase64(sealed) });
  }

  /**
   * New device: register with the link token (no device token yet).
   * @param {string} username
   * @param {string} linkToken
   * @param {DeviceUpload} device
   * @param {Uint8Array} deviceList the account's new list, naming this device too
   */
  async addLinkedDevice(username, linkToken, device, deviceList) {
    const body = { username, link_token: linkToken, device: deviceBody(device), device_list_b64: toBase64(deviceList) };
    const data = await this.request('POST', '/api/v1/devices', body, { bearer: false });
    return {
      username: /** @type {string} */ (field(data, 'username', 'string')),
      deviceId: /** @type {number} */ (field(data, 'device_id', 'number')),
      token: /** @type {string} */ (field(data, 'token', 'string')),
    };
  }

  // --- the calling device -----------------------------------------------------------

  /** @returns {Promise<PreKeyCounts>} */
  async prekeyCounts() {
    return counts(await this.request('GET', '/api/v1/devices/self/prekeys'));
  }

  /**
   * @param {Uint8Array[]} oneTime
   * @param {Uint8Array[]} kem
   * @returns {Promise<PreKeyCounts>}
   */
  async uploadPrekeys(oneTime, kem) {
    const body = { one_time_prekeys_b64: oneTime.map(toBase64), kem_prekeys_b64: kem.map(toBase64) };
    return counts(await this.request('POST', '/api/v1/devices/self/prekeys', body));
  }

  /** @param {Uint8Array} signedPrekey */
  async putSignedPrekey(signedPrekey) {
    await this.request('PUT', '/api/v1/devices/self/signed-prekey', {
      signed_prekey_b64: toBase64(signedPrekey),
    });
  }

  /** @param {Uint8Array} kemPrekey */
  async putLastResortKemPrekey(kemPrekey) {
    await this.request('PUT', '/api/v1/devices/self/last-resort-kem-prekey', {
      kem_prekey_b64: toBase64(kemPrekey),
    });
  }

  // --- attachments (docs/api.md, "Attachments") ---------------------------------------

  /**
   * Announce a blob of `size` bytes (protocol blobSize of the file).
   * @param {number} size
   * @returns {Promise<{id: string, size: number, offset: number, chunkBytes: number}>}
   */
  async createBlob(size) {
    const data = await this.request('POST', '/api/v1/attachments', { size });
    return {
      id: field(data, 'id', 'string'),
      size: field(data, 'size', 'number'),
      offset: field(data, 'offset', 'number'),
      chunkBytes: field(data, 'chunk_bytes', 'number'),
    };
  }

  /**
   * Append `chunk` at `offset` (where the server is); resolves to the new offset.
   * @param {string} blobId
   * @param {number} offset
   * @param {Uint8Array} chunk
   * @param {AbortSignal} [signal]
   */
  async uploadChunk(blobId, offset, chunk, signal) {
    const headers = { 'Upload-Offset': String(offset), 'Content-Type': 'application/offset+octet-stream' };
    return uploadOffset(await this.raw('PATCH', blobPath(blobId), { body: chunk, headers, signal }));
  }

  /**
   * How many bytes of the blob the server holds: where an upload resumes.
   * @param {string} blobId
   * @param {AbortSignal} [signal]
   */
  async uploadOffset(blobId, signal) {
    return uploadOffset(await this.raw('HEAD', blobPath(blobId), { signal }));
  }

  /**
   * The blob from byte `start` on, as a streamed Response (206, or 200 from 0).
   * @param {string} blobId
   * @param {number} [start]
   * @param {AbortSignal} [signal]
   */
  downloadBlob(blobId, start = 0, signal) {
    const headers = { Accept: 'application/octet-stream', ...(start ? { Range: `bytes=${start}-` } : {}) };
    return this.raw('GET', blobPath(blobId), { headers, signal });
  }
}

/** @param {string} blobId */
function blobPath(blobId) {
  return `/api/v1/attachments/${encodeURIComponent(blobId)}`;
}

/** @param {Response} response */
function uploadOffset(response) {
  const value = Number(response.headers.get('Upload-Offset'));
  if (!response.headers.has('Upload-Offset') || !Number.isSafeInteger(value) || value < 0) {
    throw badResponse(`${response.url}: no Upload-Offset in the answer`);
  }
  return value;
}

/**
 * The ClientError for a failed answer: the server's `{code, message, fields}`.
 * @param {Response} response
 * @param {any} data the parsed body, if any
 * @param {string} what
 */
function errorFrom(response, data, what) {
  const status = response.status;
  const retry = Number(response.headers.get('Retry-After'));
  const extra = {
    status,
    fields: data?.fields && typeof data.fields === 'object' ? data.fields : {},
    retryAfter: Number.isFinite(retry) && response.headers.has('Retry-After') ? retry : null,
  };
  const slug = data?.code;
  const message = typeof data?.message === 'string' && data.message ? data.message : `HTTP ${status}`;
  if (typeof slug !== 'string') {
    return new ClientError(LocalCode.BAD_RESPONSE, `${what}: HTTP ${status} without an error code`, extra);
  }
  try {
    errorCodeFromSlug(slug);
  } catch {
    // A code newer than this client: keep it readable rather than guess.
    return new ClientError(LocalCode.BAD_RESPONSE, `${what}: HTTP ${status} ${slug}: ${message}`, extra);
  }
  return new ClientError(slug, message, extra);
}

/**
 * @param {any} item
 * @returns {OwnDevice}
 */
function ownDevice(item) {
  const text = (/** @type {string} */ key) => (typeof item?.[key] === 'string' ? item[key] : null);
  return {
    deviceId: field(item, 'device_id', 'number'),
    name: text('name') ?? '',
    createdAt: text('created_at'),
    lastSeenAt: text('last_seen_at'),
    current: item?.current === true,
  };
}

/**
 * @param {any} data
 * @param {string} key
 * @returns {Expiring}
 */
function expiring(data, key) {
  const expiresAt = Date.parse(field(data, 'expires_at', 'string'));
  if (Number.isNaN(expiresAt)) throw badResponse('field expires_at is not a date');
  return { value: field(data, key, 'string'), expiresAt };
}

/**
 * @param {any} data
 * @param {string} key
 * @returns {any[]}
 */
function listOf(data, key) {
  const value = data?.[key];
  if (!Array.isArray(value) || !value.every((item) => item && typeof item === 'object')) {
    throw badResponse(`field ${key} is missing or not a list of objects`);
  }
  return value;
}
