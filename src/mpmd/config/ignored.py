"""The Apache directives and sections mpmd accepts and ignores, as data, with their warning.

This module owns the tables of directives (`IGNORED`) and sections (`IGNORED_SECTIONS`) of
Apache modules and core features mpmd does not implement, keyed by the module that defines
them, so that stock Apache configurations load with one warning per name; and the text of that
warning. config/directives.py checks that no implemented directive is also listed here and
documents the tables; config/build.py calls ignored_module and ignored_warning.

It never imports the directive registry and never decides what an implemented directive
means: a name found here is only ever warned about and skipped.
"""

from __future__ import annotations

# Directives of Apache modules (and core features) mpmd does not implement: accepted with one
# warning per name and ignored, so stock Apache configurations load. module -> names.
IGNORED: dict[str, str] = {
    "core": "AcceptFilter AcceptPathInfo AccessFileName AddDefaultCharset AllowEncodedSlashes "
    "CGIMapExtension CGIPassAuth CGIVar ContentDigest CoreDumpDirectory DefaultRuntimeDir "
    "DefaultType EnableExceptionHook EnableMMAP EnableSendfile Error ErrorDocument FileETag "
    "FlushMaxPipelined FlushMaxThreshold ForceType HostnameLookups HttpProtocolOptions "
    "LimitInternalRecursion LimitXMLRequestBody ListenCoresBucketsRatio MaxMemFree "
    "MaxRangeOverlaps MaxRangeReversals MaxRanges MergeSlashes MergeTrailers Mutex "
    "NameVirtualHost Protocol Protocols ProtocolsHonorOrder QualifyRedirectURL "
    "ReceiveBufferSize RegexDefaultOptions RegisterHttpMethod RLimitCPU RLimitMEM RLimitNPROC "
    "ScriptInterpreterSource SeeRequestTail SendBufferSize ServerPath ServerSignature "
    "ServerTokens SetInputFilter SetOutputFilter StrictHostCheck ThreadStackSize TraceEnable "
    "UseCanonicalName UseCanonicalPhysicalPort",
    "mod_mime": "AddCharset AddEncoding AddHandler AddInputFilter AddLanguage AddOutputFilter "
    "AddType DefaultLanguage ModMimeUsePathInfo MultiviewsMatch RemoveCharset RemoveEncoding "
    "RemoveHandler RemoveInputFilter RemoveLanguage RemoveOutputFilter RemoveType TypesConfig",
    "mod_mime_magic": "MimeMagicFile",
    "mod_negotiation": "CacheNegotiatedDocs ForceLanguagePriority LanguagePriority",
    "mod_autoindex": "AddAlt AddAltByEncoding AddAltByType AddDescription AddIcon "
    "AddIconByEncoding AddIconByType DefaultIcon HeaderName IndexHeadInsert IndexIgnore "
    "IndexIgnoreReset IndexOptions IndexOrderDefault IndexStyleSheet ReadmeName",
    "mod_alias": "AliasMatch Redirect RedirectMatch RedirectPermanent RedirectTemp ScriptAlias "
    "ScriptAliasMatch",
    "mod_dir": "DirectoryCheckHandler DirectoryIndexRedirect DirectorySlash FallbackResource",
    "mod_deflate": "DeflateAlterETag DeflateBufferSize DeflateCompressionLevel "
    "DeflateFilterNote DeflateInflateLimitRequestBody DeflateInflateRatioBurst "
    "DeflateInflateRatioLimit DeflateMemLevel DeflateWindowSize",
    "mod_brotli": "BrotliAlterETag BrotliCompressionMaxInputBlock BrotliCompressionQuality "
    "BrotliCompressionWindow BrotliFilterNote",
    "mod_filter": "AddOutputFilterByType FilterChain FilterDeclare FilterProtocol "
    "FilterProvider FilterTrace",
    "mod_setenvif": "BrowserMatch BrowserMatchNoCase SetEnvIf SetEnvIfExpr SetEnvIfNoCase",
    "mod_env": "PassEnv SetEnv UnsetEnv",
    "mod_headers": "Header RequestHeader",
    "mod_expires": "ExpiresActive ExpiresByType ExpiresDefault",
    "mod_rewrite": "RewriteBase RewriteCond RewriteEngine RewriteMap RewriteOptions RewriteRule",
    "mod_ssl": "SSLCADNRequestFile SSLCADNRequestPath SSLCARevocationCheck SSLCARevocationFile "
    "SSLCARevocationPath SSLCompression SSLCryptoDevice SSLInsecureRenegotiation SSLOCSPEnable "
    "SSLOpenSSLConfCmd SSLPassPhraseDialog SSLProxyCACertificateFile SSLProxyCheckPeerCN "
    "SSLProxyCheckPeerExpire SSLProxyCheckPeerName SSLProxyEngine SSLProxyVerify SSLRandomSeed "
    "SSLRequire SSLRequireSSL SSLSessionCacheTimeout SSLStaplingCache SSLUseStapling",
    "mod_auth_basic": "AuthBasicAuthoritative AuthBasicFake AuthBasicProvider "
    "AuthBasicUseDigestAlgorithm",
    "mod_auth_digest": "AuthDigestAlgorithm AuthDigestDomain AuthDigestNonceLifetime "
    "AuthDigestProvider AuthDigestQop AuthDigestShmemSize",
    "mod_auth_form": "AuthFormProvider AuthFormLoginRequiredLocation AuthFormLoginSuccessLocation",
    "mod_authn_core": "AuthName AuthType",
    "mod_authn_file": "AuthUserFile",
    "mod_authn_dbm": "AuthDBMType AuthDBMUserFile",
    "mod_authn_socache": "AuthnCacheContext AuthnCacheEnable AuthnCacheProvideFor "
    "AuthnCacheSOCache AuthnCacheTimeout",
    "mod_authz_core": "AuthMerging AuthzSendForbiddenOnFailure",
    "mod_authz_groupfile": "AuthGroupFile",
    "mod_authz_dbm": "AuthzDBMType AuthDBMGroupFile",
    "mod_authnz_ldap": "AuthLDAPBindDN AuthLDAPBindPassword AuthLDAPGroupAttribute "
    "AuthLDAPGroupAttributeIsDN AuthLDAPRemoteUserAttribute AuthLDAPURL",
    "mod_access_compat": "Allow Deny Order Satisfy",
    "mod_proxy": "BalancerGrowth BalancerInherit BalancerPersist NoProxy ProxyBadHeader "
    "ProxyBlock ProxyDomain ProxyIOBufferSize ProxyMaxForwards ProxyPassInherit "
    "ProxyPassInterpolateEnv ProxyPassReverseCookieDomain ProxyPassReverseCookiePath "
    "ProxyReceiveBufferSize ProxyRemote ProxyRemoteMatch ProxySourceAddress",
    "mod_proxy_fcgi": "ProxyFCGIBackendType ProxyFCGISetEnvIf",
    "mod_proxy_html": "ProxyHTMLEnable ProxyHTMLExtended ProxyHTMLLinks ProxyHTMLURLMap",
    "mod_cgi": "ScriptLog ScriptLogBuffer ScriptLogLength",
    "mod_cgid": "CGIDScriptTimeout ScriptSock",
    "mod_actions": "Action Script",
    "mod_include": "SSIErrorMsg SSIETag SSILastModified SSILegacyExprParser SSITimeFormat "
    "SSIUndefinedEcho XBitHack",
    "mod_userdir": "UserDir",
    "mod_info": "AddModuleInfo",
    "mod_status": "",
    "mod_charset_lite": "CharsetDefault CharsetOptions CharsetSourceEnc",
    "mod_dav": "DAV DAVDepthInfinity DAVMinTimeout",
    "mod_dav_fs": "DAVLockDB",
    "mod_cache": "CacheDefaultExpire CacheDisable CacheEnable CacheIgnoreHeaders CacheLock "
    "CacheMaxExpire CacheQuickHandler",
    "mod_cache_disk": "CacheDirLength CacheDirLevels CacheRoot",
    "mod_http2": "H2Direct H2MaxSessionStreams H2ModernTLSOnly H2Push H2Upgrade",
    "mod_remoteip": "RemoteIPHeader RemoteIPInternalProxy RemoteIPTrustedProxy",
    "mod_usertrack": "CookieDomain CookieExpires CookieName CookieStyle CookieTracking",
    "mod_speling": "CheckCaseOnly CheckSpelling",
    "mod_substitute": "Substitute",
    "mod_sed": "InputSed OutputSed",
    "mod_macro": "Use UndefMacro",
    "mod_log_config": "GlobalLog",
    "mod_logio": "LogIOTrackTTFB",
    "mod_log_forensic": "ForensicLog",
    "mod_ldap": "LDAPCacheEntries LDAPCacheTTL LDAPSharedCacheSize LDAPTrustedGlobalCert",
    "mod_md": "MDCertificateAgreement MDomain MDContactEmail",
    "mod_wsgi": "WSGIApplicationGroup WSGICallableObject WSGIDaemonProcess WSGIImportScript "
    "WSGILazyInitialization WSGIPassAuthorization WSGIProcessGroup WSGIPythonHome "
    "WSGIRestrictEmbedded WSGIScriptAliasMatch WSGISocketPrefix",
    "mod_php": "php_admin_flag php_admin_value php_flag php_value",
}
# Sections whose directives mpmd does not apply (one warning per section name).
IGNORED_SECTIONS: dict[str, str] = {
    "core": "Files FilesMatch If ElseIf Else Limit LimitExcept",
    "mod_authz_core": "RequireAll RequireAny RequireNone AuthzProviderAlias",
    "mod_authn_core": "AuthnProviderAlias",
    "mod_macro": "Macro",
}
# A hint appended to the "not implemented" warning for some modules.
IGNORED_NOTES: dict[str, str] = {
    "mod_mime": "mpmd serves Content-Type from its own MIME table",
    "mod_ssl": "mpmd implements the mod_ssl directives listed in docs/tls.md",
    "mod_wsgi": "mpmd runs WSGI apps in its own processes",
}

IGNORED_BY_NAME = {n.lower(): module for module, names in IGNORED.items() for n in names.split()}
IGNORED_SECTION_BY_NAME = {
    n.lower(): module for module, names in IGNORED_SECTIONS.items() for n in names.split()
}
# Every ignored name as the tables spell it (a section's spelling wins), keyed by lower case.
IGNORED_CANONICAL = {
    **{n.lower(): n for names in IGNORED.values() for n in names.split()},
    **{n.lower(): n for names in IGNORED_SECTIONS.values() for n in names.split()},
}


def ignored_module(name: str) -> str | None:
    """The Apache module whose directive (or section) `name` mpmd accepts and ignores."""
    key = name.lower()
    return IGNORED_BY_NAME.get(key) or IGNORED_SECTION_BY_NAME.get(key)


def ignored_warning(where: str, name: str, module: str, section: bool = False) -> str:
    """The one warning per ignored name, naming its module (plus a hint for some modules)."""
    canonical = IGNORED_CANONICAL.get(name.lower(), name)
    shown = f"<{canonical}>" if section else canonical
    note = IGNORED_NOTES.get(module)
    text = f"{where}: {shown} ({module}) is not implemented by mpmd; every {shown} is ignored"
    return f"{text} ({note})" if note else text
