//! The few libvirt C functions mvbridge calls, found in `libvirt.so.0`
//! at run time. Linking libvirt at build time would make every build
//! need libvirt-dev and every install need libvirt0, also where libvirt
//! is off; the Rust bindings (`virt`) would also put LGPL code into the
//! binary. The library is opened only when `[libvirt]` is enabled.
//!
//! Everything unsafe about libvirt stays in this file: the rest of
//! mvbridge sees [`Connection`], which opens read-only, lists domains and
//! reads their XML, and [`Events`], which turns libvirt's callbacks into
//! [`Hint`]s on a channel.

use std::ffi::{CStr, CString, NulError, c_char, c_int, c_uint, c_void};
use std::sync::mpsc::Sender;
use std::sync::{Arc, OnceLock};

use libloading::Library;

use crate::error::{Error, Result};

use super::Snapshot;

/// The library's name in Debian's (and everyone's) libvirt0 package.
const SONAME: &str = "libvirt.so.0";

type ConnectPtr = *mut c_void;
type DomainPtr = *mut c_void;
type FreeCallback = unsafe extern "C" fn(*mut c_void);

/// `VIR_ERR_NO_DOMAIN`: the domain is not (or no longer) there.
const ERR_NO_DOMAIN: c_int = 42;
/// `VIR_UUID_STRING_BUFLEN`.
const UUID_BUFLEN: usize = 37;

const EVENT_LIFECYCLE: c_int = 0;
const EVENT_REBOOT: c_int = 1;
const EVENT_DEVICE_REMOVED: c_int = 15;
const EVENT_DEVICE_ADDED: c_int = 19;
const EVENT_METADATA_CHANGE: c_int = 23;

/// What went wrong with libvirt. Clone, as loading it is tried once and
/// its outcome kept.
#[derive(Clone, Debug, thiserror::Error)]
pub enum LibvirtError {
    #[error(
        "[libvirt] is enabled but {soname} cannot be loaded: install libvirt0 (apt-get install libvirt0), or turn [libvirt] off"
    )]
    NotInstalled {
        soname: String,
        #[source]
        source: Arc<libloading::Error>,
    },

    #[error("{soname} has no {symbol}: libvirt 3.0 or later is needed")]
    TooOld {
        soname: String,
        symbol: &'static str,
        #[source]
        source: Arc<libloading::Error>,
    },

    /// A call libvirt failed; its own message says why.
    #[error("{doing}")]
    Call {
        doing: String,
        #[source]
        source: Reported,
    },

    #[error("{what} {value:?} holds a NUL byte")]
    Nul {
        what: &'static str,
        value: String,
        #[source]
        source: NulError,
    },

    #[error("starting libvirt's event loop thread")]
    EventThread {
        #[source]
        source: Arc<std::io::Error>,
    },
}

/// libvirt's own message for a failed call (`virGetLastErrorMessage`).
#[derive(Clone, Debug, thiserror::Error)]
#[error("{0}")]
pub struct Reported(pub String);

/// The functions, resolved once. Plain function pointers: the library
/// stays loaded for the life of the process (it is never unloaded, since
/// its event loop runs on a thread until the process exits).
struct Api {
    event_register_default_impl: unsafe extern "C" fn() -> c_int,
    event_run_default_impl: unsafe extern "C" fn() -> c_int,
    connect_open_read_only: unsafe extern "C" fn(*const c_char) -> ConnectPtr,
    connect_close: unsafe extern "C" fn(ConnectPtr) -> c_int,
    connect_set_keep_alive: unsafe extern "C" fn(ConnectPtr, c_int, c_uint) -> c_int,
    connect_register_close_callback: unsafe extern "C" fn(
        ConnectPtr,
        unsafe extern "C" fn(ConnectPtr, c_int, *mut c_void),
        *mut c_void,
        Option<FreeCallback>,
    ) -> c_int,
    connect_unregister_close_callback: unsafe extern "C" fn(
        ConnectPtr,
        unsafe extern "C" fn(ConnectPtr, c_int, *mut c_void),
    ) -> c_int,
    connect_domain_event_deregister_any: unsafe extern "C" fn(ConnectPtr, c_int) -> c_int,
    connect_domain_event_register_any: unsafe extern "C" fn(
        ConnectPtr,
        DomainPtr,
        c_int,
        *const c_void,
        *mut c_void,
        Option<FreeCallback>,
    ) -> c_int,
    connect_list_all_domains:
        unsafe extern "C" fn(ConnectPtr, *mut *mut DomainPtr, c_uint) -> c_int,
    domain_lookup_by_uuid_string: unsafe extern "C" fn(ConnectPtr, *const c_char) -> DomainPtr,
    domain_get_xml_desc: unsafe extern "C" fn(DomainPtr, c_uint) -> *mut c_char,
    domain_get_uuid_string: unsafe extern "C" fn(DomainPtr, *mut c_char) -> c_int,
    domain_is_active: unsafe extern "C" fn(DomainPtr) -> c_int,
    domain_free: unsafe extern "C" fn(DomainPtr) -> c_int,
    get_last_error_message: unsafe extern "C" fn() -> *const c_char,
    /// Returns a `virErrorPtr`; only its first field, the code, is read.
    get_last_error: unsafe extern "C" fn() -> *const c_int,
}

fn api() -> Result<&'static Api> {
    static API: OnceLock<std::result::Result<Api, LibvirtError>> = OnceLock::new();
    API.get_or_init(|| load(SONAME))
        .as_ref()
        .map_err(|e| Error::from(e.clone()))
}

fn load(soname: &str) -> std::result::Result<Api, LibvirtError> {
    // SAFETY: loading libvirt runs its constructors, which only set up
    // its own state.
    let lib = unsafe { Library::new(soname) }.map_err(|e| LibvirtError::NotInstalled {
        soname: soname.to_owned(),
        source: Arc::new(e),
    })?;
    // Never unloaded: its event loop thread and callbacks live as long
    // as the process.
    let lib: &'static Library = Box::leak(Box::new(lib));
    macro_rules! sym {
        ($name:literal) => {
            // SAFETY: the type is the function's C prototype, as in
            // libvirt's headers.
            *unsafe { lib.get($name) }.map_err(|e| LibvirtError::TooOld {
                soname: soname.to_owned(),
                symbol: $name,
                source: Arc::new(e),
            })?
        };
    }
    Ok(Api {
        event_register_default_impl: sym!("virEventRegisterDefaultImpl"),
        event_run_default_impl: sym!("virEventRunDefaultImpl"),
        connect_open_read_only: sym!("virConnectOpenReadOnly"),
        connect_close: sym!("virConnectClose"),
        connect_set_keep_alive: sym!("virConnectSetKeepAlive"),
        connect_register_close_callback: sym!("virConnectRegisterCloseCallback"),
        connect_unregister_close_callback: sym!("virConnectUnregisterCloseCallback"),
        connect_domain_event_deregister_any: sym!("virConnectDomainEventDeregisterAny"),
        connect_domain_event_register_any: sym!("virConnectDomainEventRegisterAny"),
        connect_list_all_domains: sym!("virConnectListAllDomains"),
        domain_lookup_by_uuid_string: sym!("virDomainLookupByUUIDString"),
        domain_get_xml_desc: sym!("virDomainGetXMLDesc"),
        domain_get_uuid_string: sym!("virDomainGetUUIDString"),
        domain_is_active: sym!("virDomainIsActive"),
        domain_free: sym!("virDomainFree"),
        get_last_error_message: sym!("virGetLastErrorMessage"),
        get_last_error: sym!("virGetLastError"),
    })
}

/// Loads libvirt, if that has not been done: the error says what to
/// install.
pub fn available() -> Result<()> {
    api().map(|_| ())
}

/// libvirt's last error on this thread, as text.
fn last_error(api: &Api) -> String {
    // SAFETY: returns a thread-local string libvirt owns (or a fixed
    // "no error" text), valid until the next libvirt call here.
    let msg = unsafe { (api.get_last_error_message)() };
    if msg.is_null() {
        return "unknown libvirt error".into();
    }
    // SAFETY: a NUL-terminated string, see above.
    unsafe { CStr::from_ptr(msg) }
        .to_string_lossy()
        .into_owned()
}

fn failed(doing: String, api: &Api) -> Error {
    LibvirtError::Call {
        doing,
        source: Reported(last_error(api)),
    }
    .into()
}

fn c_string(what: &'static str, value: &str) -> Result<CString> {
    CString::new(value).map_err(|source| {
        LibvirtError::Nul {
            what,
            value: value.to_owned(),
            source,
        }
        .into()
    })
}

/// A string libvirt allocated for the caller, copied and freed.
///
/// # Safety
/// `p` is null or a NUL-terminated string from malloc.
unsafe fn take_string(p: *mut c_char) -> Option<String> {
    if p.is_null() {
        return None;
    }
    // SAFETY: as promised by the caller.
    let s = unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned();
    // SAFETY: libvirt documents that the caller frees it with free().
    unsafe { libc::free(p.cast()) };
    Some(s)
}

/// A read-only connection; closed when dropped.
pub struct Connection {
    api: &'static Api,
    ptr: ConnectPtr,
    /// Event callbacks registered: each holds a reference to the
    /// connection, so they are deregistered before it is closed, or it
    /// would never be freed.
    callbacks: Vec<c_int>,
    close_callback: bool,
}

// SAFETY: libvirt connections may be used from any thread (libvirt's
// threading rules: one connection, many threads).
unsafe impl Send for Connection {}

impl Connection {
    pub fn open_read_only(uri: &str) -> Result<Connection> {
        let api = api()?;
        let c_uri = c_string("libvirt uri", uri)?;
        // SAFETY: a valid C string; returns null on failure.
        let ptr = unsafe { (api.connect_open_read_only)(c_uri.as_ptr()) };
        if ptr.is_null() {
            return Err(failed(
                format!("connecting to libvirt at {uri} (read-only)"),
                api,
            ));
        }
        Ok(Connection {
            api,
            ptr,
            callbacks: Vec::new(),
            close_callback: false,
        })
    }

    /// Every domain libvirt knows, running or not.
    pub fn domains(&self) -> Result<Vec<Snapshot>> {
        let mut list: *mut DomainPtr = std::ptr::null_mut();
        // SAFETY: libvirt fills `list` with `n` domain references.
        let n = unsafe { (self.api.connect_list_all_domains)(self.ptr, &mut list, 0) };
        if n < 0 {
            return Err(failed("listing libvirt's domains".into(), self.api));
        }
        // SAFETY: `list` holds `n` valid pointers; each is taken over by a
        // Domain (freed when dropped) before anything can fail.
        let doms: Vec<Domain> = (0..n as usize)
            .map(|i| Domain {
                api: self.api,
                ptr: unsafe { *list.add(i) },
            })
            .collect();
        // SAFETY: the array itself is the caller's to free.
        unsafe { libc::free(list.cast()) };
        let mut out = Vec::new();
        for d in &doms {
            match d.snapshot() {
                Ok(s) => out.push(s),
                // Undefined between the listing and now.
                Err(Gone::Gone) => {}
                Err(Gone::Failed(e)) => return Err(e),
            }
        }
        Ok(out)
    }

    /// The domain with this UUID now; `None` once it is undefined.
    pub fn domain(&self, uuid: &str) -> Result<Option<Snapshot>> {
        let c_uuid = c_string("domain uuid", uuid)?;
        // SAFETY: valid connection and C string.
        let ptr = unsafe { (self.api.domain_lookup_by_uuid_string)(self.ptr, c_uuid.as_ptr()) };
        if ptr.is_null() {
            if self.gone() {
                return Ok(None);
            }
            return Err(failed(
                format!("looking up libvirt domain {uuid}"),
                self.api,
            ));
        }
        let dom = Domain { api: self.api, ptr };
        match dom.snapshot() {
            Ok(s) => Ok(Some(s)),
            Err(Gone::Gone) => Ok(None),
            Err(Gone::Failed(e)) => Err(e),
        }
    }

    /// The last failure on this thread was "no such domain".
    fn gone(&self) -> bool {
        // SAFETY: null or a pointer to libvirt's thread-local virError,
        // whose first field is the int code.
        let err = unsafe { (self.api.get_last_error)() };
        // SAFETY: see above.
        !err.is_null() && unsafe { *err } == ERR_NO_DOMAIN
    }

    /// Subscribes to the domain events that can change what mvbridge
    /// steers, and to the connection closing; libvirt's event loop (see
    /// [`run_event_loop`]) calls back, and each call becomes a hint.
    /// Libvirt keeps the connection alive with keepalive messages, so a
    /// daemon that went away is noticed within seconds.
    pub fn subscribe(&mut self, hints: &Sender<Hint>) -> Result<()> {
        // SAFETY: valid connection; 5 s interval, 3 missed: closed.
        if unsafe { (self.api.connect_set_keep_alive)(self.ptr, 5, 3) } < 0 {
            return Err(failed("enabling libvirt keepalive".into(), self.api));
        }
        let callbacks: [(c_int, *const c_void); 5] = [
            (EVENT_LIFECYCLE, on_lifecycle as *const c_void),
            (EVENT_REBOOT, on_reboot as *const c_void),
            (EVENT_DEVICE_ADDED, on_device as *const c_void),
            (EVENT_DEVICE_REMOVED, on_device as *const c_void),
            (EVENT_METADATA_CHANGE, on_metadata as *const c_void),
        ];
        for (id, cb) in callbacks {
            let opaque = Box::into_raw(Box::new(hints.clone())).cast();
            // SAFETY: `cb` has the prototype libvirt documents for event
            // `id`; libvirt owns `opaque` from here and frees it with
            // `free_sender` when the callback goes with the connection.
            let rc = unsafe {
                (self.api.connect_domain_event_register_any)(
                    self.ptr,
                    std::ptr::null_mut(),
                    id,
                    cb,
                    opaque,
                    Some(free_sender),
                )
            };
            if rc < 0 {
                // SAFETY: not taken over by libvirt after a failure.
                unsafe { free_sender(opaque) };
                return Err(failed(
                    format!("subscribing to libvirt domain events (event {id})"),
                    self.api,
                ));
            }
            self.callbacks.push(rc);
        }
        let opaque = Box::into_raw(Box::new(hints.clone())).cast();
        // SAFETY: as above, for the close callback.
        let rc = unsafe {
            (self.api.connect_register_close_callback)(
                self.ptr,
                on_close,
                opaque,
                Some(free_sender),
            )
        };
        if rc < 0 {
            // SAFETY: not taken over by libvirt after a failure.
            unsafe { free_sender(opaque) };
            return Err(failed("watching the libvirt connection".into(), self.api));
        }
        self.close_callback = true;
        Ok(())
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        // SAFETY: ids and callback registered on this connection; libvirt
        // frees their senders. On a dead connection the local part still
        // succeeds (only telling the server fails).
        unsafe {
            for id in self.callbacks.drain(..) {
                (self.api.connect_domain_event_deregister_any)(self.ptr, id);
            }
            if self.close_callback {
                (self.api.connect_unregister_close_callback)(self.ptr, on_close);
            }
            (self.api.connect_close)(self.ptr);
        }
    }
}

struct Domain {
    api: &'static Api,
    ptr: DomainPtr,
}

enum Gone {
    /// The domain was undefined meanwhile.
    Gone,
    Failed(Error),
}

impl Domain {
    fn snapshot(&self) -> std::result::Result<Snapshot, Gone> {
        let uuid = uuid_of(self.api, self.ptr)
            .ok_or_else(|| Gone::Failed(failed("reading a domain's uuid".into(), self.api)))?;
        let fail = |what: &str| {
            // SAFETY: reads libvirt's thread-local error code.
            let err = unsafe { (self.api.get_last_error)() };
            // SAFETY: null or a virError, whose first field is the code.
            if !err.is_null() && unsafe { *err } == ERR_NO_DOMAIN {
                Gone::Gone
            } else {
                Gone::Failed(failed(format!("{what} of libvirt domain {uuid}"), self.api))
            }
        };
        // SAFETY: valid domain reference.
        let active = match unsafe { (self.api.domain_is_active)(self.ptr) } {
            1 => true,
            0 => false,
            _ => return Err(fail("reading the state")),
        };
        // SAFETY: valid domain; flags 0: the live XML of a running domain,
        // what a read-only connection may read.
        let xml = unsafe { take_string((self.api.domain_get_xml_desc)(self.ptr, 0)) }
            .ok_or_else(|| fail("reading the XML"))?;
        Ok(Snapshot { uuid, active, xml })
    }
}

impl Drop for Domain {
    fn drop(&mut self) {
        // SAFETY: our reference.
        unsafe { (self.api.domain_free)(self.ptr) };
    }
}

fn uuid_of(api: &Api, dom: DomainPtr) -> Option<String> {
    let mut buf = [0 as c_char; UUID_BUFLEN];
    // SAFETY: a buffer of VIR_UUID_STRING_BUFLEN; a local call, no I/O,
    // so it may be made inside an event callback.
    if unsafe { (api.domain_get_uuid_string)(dom, buf.as_mut_ptr()) } < 0 {
        return None;
    }
    // SAFETY: libvirt wrote a NUL-terminated string.
    Some(
        unsafe { CStr::from_ptr(buf.as_ptr()) }
            .to_string_lossy()
            .into_owned(),
    )
}

/// What a libvirt callback says: look at this domain again, or the
/// connection is gone. Callbacks run on libvirt's event loop and must
/// not call back into libvirt over the connection; they only send this.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Hint {
    Domain(String),
    Closed(&'static str),
}

/// # Safety
/// `opaque` is a `Box<Sender<Hint>>` made by `subscribe`.
unsafe fn hint_domain(dom: DomainPtr, opaque: *mut c_void) {
    let Ok(api) = api() else { return };
    if let Some(uuid) = uuid_of(api, dom) {
        // SAFETY: as promised by the caller.
        let tx = unsafe { &*(opaque as *const Sender<Hint>) };
        let _ = tx.send(Hint::Domain(uuid));
    }
}

unsafe extern "C" fn on_lifecycle(
    _conn: ConnectPtr,
    dom: DomainPtr,
    _event: c_int,
    _detail: c_int,
    opaque: *mut c_void,
) -> c_int {
    // SAFETY: registered with a Box<Sender<Hint>>.
    unsafe { hint_domain(dom, opaque) };
    0
}

unsafe extern "C" fn on_reboot(_conn: ConnectPtr, dom: DomainPtr, opaque: *mut c_void) {
    // SAFETY: registered with a Box<Sender<Hint>>.
    unsafe { hint_domain(dom, opaque) };
}

unsafe extern "C" fn on_device(
    _conn: ConnectPtr,
    dom: DomainPtr,
    _alias: *const c_char,
    opaque: *mut c_void,
) {
    // SAFETY: registered with a Box<Sender<Hint>>.
    unsafe { hint_domain(dom, opaque) };
}

unsafe extern "C" fn on_metadata(
    _conn: ConnectPtr,
    dom: DomainPtr,
    _kind: c_int,
    _nsuri: *const c_char,
    opaque: *mut c_void,
) {
    // SAFETY: registered with a Box<Sender<Hint>>.
    unsafe { hint_domain(dom, opaque) };
}

unsafe extern "C" fn on_close(_conn: ConnectPtr, reason: c_int, opaque: *mut c_void) {
    let why = match reason {
        0 => "an I/O error",
        1 => "libvirtd closed it",
        2 => "keepalive timed out",
        _ => "the client closed it",
    };
    // SAFETY: registered with a Box<Sender<Hint>>.
    let tx = unsafe { &*(opaque as *const Sender<Hint>) };
    let _ = tx.send(Hint::Closed(why));
}

unsafe extern "C" fn free_sender(opaque: *mut c_void) {
    // SAFETY: made by Box::into_raw in `subscribe`, freed once.
    drop(unsafe { Box::from_raw(opaque as *mut Sender<Hint>) });
}

/// Registers libvirt's default event loop (before any connection that
/// wants events is opened) and runs it on a thread of its own for the
/// rest of the process: it delivers the callbacks and the keepalives.
pub fn start_event_loop() -> Result<()> {
    static STARTED: OnceLock<std::result::Result<(), LibvirtError>> = OnceLock::new();
    let api = api()?;
    STARTED
        .get_or_init(|| {
            // SAFETY: called once, before connections are opened.
            if unsafe { (api.event_register_default_impl)() } < 0 {
                return Err(LibvirtError::Call {
                    doing: "starting libvirt's event loop".into(),
                    source: Reported(last_error(api)),
                });
            }
            std::thread::Builder::new()
                .name("libvirt-events".into())
                .spawn(move || {
                    loop {
                        // SAFETY: the default implementation is registered.
                        if unsafe { (api.event_run_default_impl)() } < 0 {
                            tracing::error!("libvirt's event loop failed: {}", last_error(api));
                            std::thread::sleep(std::time::Duration::from_secs(1));
                        }
                    }
                })
                .map(|_| ())
                .map_err(|e| LibvirtError::EventThread {
                    source: Arc::new(e),
                })
        })
        .clone()
        .map_err(Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_library_says_what_to_install() {
        let Err(e) = load("libvirt-not-here.so.0") else {
            panic!("loaded a library that does not exist");
        };
        let why = crate::errno::chain(&e);
        assert!(why.contains("install libvirt0"), "{why}");
        // libloading's reason comes along.
        assert!(why.contains("libvirt-not-here.so.0: cannot open"), "{why}");
    }

    #[test]
    fn a_library_without_libvirt_is_refused() {
        // libc is there, and has none of libvirt's functions.
        let Err(e) = load("libc.so.6") else {
            panic!("took libc for libvirt");
        };
        let why = e.to_string();
        assert!(why.contains("has no virEventRegisterDefaultImpl"), "{why}");
    }
}
