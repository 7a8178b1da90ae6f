export type HttpMethod = 'GET' | 'POST' | 'PATCH' | 'PUT' | 'DELETE' | 'get' | 'post' | 'patch' | 'put' | 'delete';

export interface CursorPagination {
  type: 'cursor';
  cursor_path_in_response: string;
  cursor_name_in_request: string;
  limit_name_in_request?: string;
  limit?: number | string;
  response_path?: string;
  in_body?: boolean;
}

export interface LinkPagination {
  type: 'link';
  link_rel_in_response_header?: string;
  link_path_in_response_body?: string;
  limit_name_in_request?: string;
  limit?: number | string;
  response_path?: string;
  in_body?: boolean;
}

export interface OffsetPagination {
  type: 'offset';
  offset_name_in_request: string;
  offset_start_value?: number;
  offset_calculation_method?: 'per-page' | 'by-response-size';
  limit_name_in_request?: string;
  limit?: number | string;
  response_path?: string;
  in_body?: boolean;
}

export type Pagination = CursorPagination | LinkPagination | OffsetPagination;

export interface ProxyConfiguration {
  endpoint: string;
  method?: HttpMethod;
  headers?: Record<string, string>;
  params?: string | Record<string, string | number | boolean | string[] | number[]>;
  data?: unknown;
  retries?: number;
  retryOn?: number[] | null;
  retryHeader?: { at?: string; after?: string };
  baseUrlOverride?: string;
  paginate?: Partial<CursorPagination> | Partial<LinkPagination> | Partial<OffsetPagination>;
  decompress?: boolean | 'true';
  responseType?: 'arraybuffer' | 'blob' | 'document' | 'json' | 'text' | 'stream';
  providerConfigKey?: string;
  connectionId?: string;
}

export interface AxiosResponse<T = any> {
  data: T;
  status: number;
  statusText: string;
  headers: Record<string, string>;
  config: ProxyConfiguration;
  request: Record<string, unknown>;
}

export interface EnvironmentVariable {
  name: string;
  value: string;
}

export type AuthModeType = 'OAUTH1' | 'OAUTH2' | 'OAUTH2_CC' | 'BASIC' | 'API_KEY' | 'APP' | 'APP_STORE' | 'CUSTOM' | 'TBA' | 'TABLEAU' | 'JWT' | 'BILL' | 'TWO_STEP' | 'SIGNATURE' | 'NONE';

export interface OAuth2Credentials { type: 'OAUTH2'; access_token: string; expires_at?: string; raw: Record<string, any> }
export interface OAuth2ClientCredentials { type: 'OAUTH2_CC'; token: string; client_id: string; client_secret: string; expires_at?: string; raw: Record<string, any> }
export interface OAuth1Credentials { type: 'OAUTH1'; oauth_token: string; oauth_token_secret: string; raw: Record<string, any> }
export interface BasicApiCredentials { type: 'BASIC'; username: string; password: string }
export interface ApiKeyCredentials { type: 'API_KEY'; apiKey: string }
export interface AppCredentials { type: 'APP'; access_token: string; expires_at?: string; raw: Record<string, any> }
export interface CustomCredentials { type: 'CUSTOM'; raw: Record<string, any> }
export type AuthCredentials = OAuth2Credentials | OAuth2ClientCredentials | OAuth1Credentials | BasicApiCredentials | ApiKeyCredentials | AppCredentials | CustomCredentials | Record<string, any>;

export interface Connection {
  id?: number;
  connection_id: string;
  provider_config_key: string;
  provider: string;
  connection_config: Record<string, any>;
  metadata: Record<string, any> | null;
  credentials: AuthCredentials;
  created_at?: string;
  updated_at?: string;
  last_fetched_at?: string;
  errors?: { type: string; log_id: string }[];
}

export interface RecordMetadata {
  first_seen_at: string;
  last_modified_at: string;
  last_action: 'ADDED' | 'UPDATED' | 'DELETED';
  deleted_at: string | null;
  cursor: string;
}

export type MergingStrategy = 'override' | 'ignore_if_modified_after';

/** `throw new nango.ActionError(payload)`: the caller of the action receives `payload`. */
export declare class ActionError<T = Record<string, unknown>> extends Error {
  type: 'action_script_runtime_error';
  payload?: T;
  constructor(payload?: T);
}

/** An SDK error (`egress_denied`, `invalid_sync_record`, ...). */
export declare class SDKError extends Error {
  code: string;
  payload?: unknown;
}

export declare class NangoAction {
  readonly connectionId: string;
  readonly providerConfigKey: string;
  readonly provider?: string;
  readonly environmentName: string;
  readonly activityLogId: string;
  readonly scriptName: string;
  readonly dryRun: boolean;
  readonly ActionError: typeof ActionError;
  /** Never aborted: the host stops an execution past its limits. */
  readonly abortSignal: AbortSignal;

  proxy<T = any>(config: ProxyConfiguration): Promise<AxiosResponse<T>>;
  get<T = any>(config: Omit<ProxyConfiguration, 'method'>): Promise<AxiosResponse<T>>;
  post<T = any>(config: Omit<ProxyConfiguration, 'method'>): Promise<AxiosResponse<T>>;
  put<T = any>(config: Omit<ProxyConfiguration, 'method'>): Promise<AxiosResponse<T>>;
  patch<T = any>(config: Omit<ProxyConfiguration, 'method'>): Promise<AxiosResponse<T>>;
  delete<T = any>(config: Omit<ProxyConfiguration, 'method'>): Promise<AxiosResponse<T>>;
  paginate<T = any>(config: ProxyConfiguration): AsyncGenerator<T[], undefined, void>;

  log(message: any, options?: { level?: 'debug' | 'info' | 'warn' | 'error' } | Record<string, any>): Promise<void>;
  log(message: any, payload: any, options: { level?: 'debug' | 'info' | 'warn' | 'error' }): Promise<void>;

  getConnection(providerConfigKeyOverride?: string, connectionIdOverride?: string, options?: { refreshToken?: boolean; refreshGithubAppJwtToken?: boolean; forceRefresh?: boolean }): Promise<Connection>;
  getToken(): Promise<string | Record<string, any>>;
  getMetadata<T = Record<string, any>>(): Promise<T>;
  setMetadata(metadata: Record<string, any>): Promise<void>;
  updateMetadata(metadata: Record<string, any>): Promise<void>;
  /** @deprecated use setMetadata */
  setFieldMapping(fieldMapping: Record<string, string>): Promise<void>;
  /** @deprecated use getMetadata */
  getFieldMapping(): Promise<Record<string, unknown>>;
  getEnvironmentVariables(): Promise<EnvironmentVariable[] | null>;
  getWebhookURL(): Promise<string | null | undefined>;
  getIntegration(queries?: { include?: ('webhook' | 'credentials')[] }): Promise<any>;
  uncontrolledFetch(options: { url: URL | string; method?: string; headers?: Record<string, string>; body?: string | Uint8Array | null }): Promise<{ ok: boolean; status: number; statusText: string; headers: { get(name: string): string | null }; text(): Promise<string>; json(): Promise<any>; arrayBuffer(): Promise<ArrayBuffer> }>;
  triggerAction<In = unknown, Out = unknown>(providerConfigKey: string, connectionId: string, actionName: string, input?: In): Promise<Out>;
  triggerSync(providerConfigKey: string, connectionId: string, sync: string | { name: string; variant: string }, optsOrSyncMode?: { reset?: boolean; emptyCache?: boolean } | 'incremental' | 'full_refresh' | 'full_refresh_and_clear_cache' | boolean): Promise<void>;
  startSync(providerConfigKey: string, syncs: (string | { name: string; variant: string })[], connectionId?: string): Promise<void>;
  getFlowAttributes<A = object>(): A | null;
  zodValidateInput<T = any, Z = any>(args: { zodSchema: Z; input: T }): Promise<{ success: true; data: T }>;
  tryAcquireLock(args: { key: string; ttlMs: number }): Promise<boolean>;
  releaseLock(args: { key: string }): Promise<boolean>;
  releaseAllLocks(): Promise<void>;
}

export declare class NangoSync extends NangoAction {
  readonly lastSyncDate?: Date;
  readonly variant: string;
  readonly track_deletes: boolean;
  modelFullName(model: string): string;

  batchSave<T = any>(results: T[], model: string): Promise<boolean | null>;
  /** @deprecated use batchSave */
  batchSend<T = any>(results: T[], model: string): Promise<boolean | null>;
  batchDelete<T = any>(results: T[], model: string): Promise<boolean | null>;
  batchUpdate<T = any>(results: T[], model: string): Promise<boolean | null>;
  getRecordsByIds<K = string | number, T = any>(ids: K[], model: string): Promise<Map<K, T & { _nango_metadata: RecordMetadata }>>;
  listRecords<T = any>(model: string, options?: { cursor?: string | null }): AsyncGenerator<T & { _nango_metadata: RecordMetadata }, void, undefined>;
  setMergingStrategy(merging: { strategy: MergingStrategy }, model: string): Promise<void>;
}
